"""Raw limit of one event backbone: produce, then consume, N realistic readings records.

Each record is what ingestion publishes for one reading (`readings_recorded`, keyed by one of
`--devices` device ids), so the figures are comparable with LIMITS.md. Every run uses a fresh
topic and group, so runs never read each other's records.

    python benchmarks/bus_limit.py embedded:///tmp/bench/bus.db
    python benchmarks/bus_limit.py kafka://127.0.0.1:9092 -n 500000
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass

from energy_tracker.core.bus.factory import bus_from_url
from energy_tracker.core.events import Reading, readings_recorded


def make_records(n: int, devices: int) -> list[tuple[bytes, bytes]]:
    start_ms = 1_767_225_600_000
    out = []
    for i in range(n):
        device = f"meter-{i % devices:05d}"
        reading = Reading(device, start_ms + i * 1000, power_w=round(100 + i % 900 * 1.7, 1))
        out.append(readings_recorded(device, [reading]))
    return out


@dataclass(frozen=True)
class BusLimit:
    """One produce-then-consume run: N records, what each took."""

    records: int
    record_bytes: float
    produce_s: float
    join_s: float
    consume_s: float

    @property
    def produce_per_s(self) -> float:
        return self.records / self.produce_s

    @property
    def consume_per_s(self) -> float:
        return self.records / self.consume_s

    @property
    def through_per_s(self) -> float:
        """Records produced and consumed a second, one after the other (the join aside)."""
        return self.records / (self.produce_s + self.consume_s)


async def measure(
    url: str,
    n: int,
    *,
    batch: int = 10_000,
    devices: int = 10_000,
    partitions: int = 8,
    max_records: int = 5_000,
) -> BusLimit:
    """Produce `n` one-reading records in publishes of `batch`, then consume them all."""
    records = make_records(n, devices)
    size = sum(len(k) + len(v) for k, v in records) / len(records)
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    bus = bus_from_url(url, partitions)
    await bus.start()
    try:
        await bus.ensure_topics([topic])
        began = time.perf_counter()
        for i in range(0, len(records), batch):
            await bus.publish(topic, records[i : i + batch])
        produce_s = time.perf_counter() - began

        began = time.perf_counter()
        consumer = await bus.subscribe(topic, f"{topic}-group")
        join_s = time.perf_counter() - began
        began = time.perf_counter()
        got = 0
        while got < len(records):
            polled = await consumer.poll(max_records, timeout_s=1.0)
            got += len(polled)
            await consumer.commit(polled)
        consume_s = time.perf_counter() - began
        await consumer.close()
    finally:
        await bus.stop()
    return BusLimit(n, size, produce_s, join_s, consume_s)


async def run(args: argparse.Namespace) -> None:
    result = await measure(
        args.url,
        args.n,
        batch=args.batch,
        devices=args.devices,
        partitions=args.partitions,
        max_records=args.max_records,
    )
    size = f"{result.record_bytes:.0f}"
    print(f"{args.url}: {args.n} records of ~{size} bytes, {args.partitions} partitions")
    print(f"  produce  {result.produce_per_s:>10,.0f} msgs/s  ({args.batch} records a publish)")
    print(
        f"  consume  {result.consume_per_s:>10,.0f} msgs/s  (poll {args.max_records}, commit each)"
    )
    print(f"  join     {result.join_s:>10.2f} s  (group join before the first poll)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="ET_BUS_URL: embedded:///path/bus.db or kafka://host:port")
    parser.add_argument("-n", type=int, default=200_000, help="records to produce and consume")
    parser.add_argument("--batch", type=int, default=10_000, help="records a publish call")
    parser.add_argument("--devices", type=int, default=10_000, help="distinct keys")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--max-records", type=int, default=5_000, help="records a poll")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
