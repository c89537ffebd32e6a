"""A simulator of real homes: seeded device models (`homes`) and a driver that registers the
homes through the public API and sends their readings (`driver`), for demos and benchmarks."""
