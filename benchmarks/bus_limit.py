"""Raw limit of one event backbone: produce, then consume, the records the pipeline sends.

Each record is what ingestion publishes for one device's readings in one POST of the
pipeline's simulated homes (`readings_recorded`, keyed by the device; floor.py builds them), so
"readings a second" here and in the pipeline count the same work. Every run uses a fresh topic
and group, so runs never read each other's records.

    python benchmarks/bus_limit.py embedded:///tmp/bench/bus.db
    python benchmarks/bus_limit.py kafka://127.0.0.1:9092 -n 500000
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass

from floor import Workload, workload

from energy_tracker.core.bus.factory import bus_from_url


@dataclass(frozen=True)
class BusLimit:
    """One produce-then-consume run: N records holding R readings, what each took."""

    records: int
    readings: int
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

    @property
    def readings_per_s(self) -> float:
        """Readings produced and consumed a second, in the records the pipeline sends."""
        return self.readings / (self.produce_s + self.consume_s)


async def measure(
    url: str,
    work: Workload,
    *,
    batch: int = 48,
    partitions: int = 8,
    max_records: int = 500,
) -> BusLimit:
    """Produce the records of `work` in publishes of `batch` (a POST's records are published
    together, so by default as many as a round of 48 homes' POSTs makes), then consume them all
    in polls of `max_records` (as the consumers do)."""
    records = work.records()
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
    return BusLimit(len(records), work.readings, size, produce_s, join_s, consume_s)


async def run(args: argparse.Namespace) -> None:
    work = workload(args.seed, args.homes, args.n, args.quarters_per_post, args.interval_ms)
    result = await measure(
        args.url,
        work,
        batch=args.batch,
        partitions=args.partitions,
        max_records=args.max_records,
    )
    size = f"{result.record_bytes:.0f}"
    print(f"{args.url}: {result.records} records of ~{size} bytes, {args.partitions} partitions")
    print(f"  through  {result.readings_per_s:>10,.0f} readings/s  (produce, then consume)")
    print(f"  produce  {result.produce_per_s:>10,.0f} msgs/s  ({args.batch} records a publish)")
    print(
        f"  consume  {result.consume_per_s:>10,.0f} msgs/s  (poll {args.max_records}, commit each)"
    )
    print(f"  join     {result.join_s:>10.2f} s  (group join before the first poll)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="ET_BUS_URL: embedded:///path/bus.db or kafka://host:port")
    parser.add_argument("-n", type=int, default=500_000, help="readings (at least)")
    parser.add_argument("--homes", type=int, default=48)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--quarters-per-post", type=int, default=9)
    parser.add_argument("--interval-ms", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=48, help="records a publish call")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--max-records", type=int, default=500, help="records a poll")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
