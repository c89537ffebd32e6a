"""Load for the pipeline benchmark: worker processes that each own some simulated homes, build
their request bodies before the clock starts, then POST them through the gateway.

Several processes, because one httpx client is a poor load generator (LIMITS.md); bodies built
ahead, because generating readings is not what is measured. A POST carries one home's readings
over whole quarters of an hour, in each home's time order, so every quarter bucket's readings
arrive in one request and the bucket's `samples` says when all of them are counted.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import httpx

from energy_tracker.core.energy import QUARTER_MS
from energy_tracker.simulator.driver import Gateway, HomeAccount, email_of, readings_body
from energy_tracker.simulator.homes import Home, HomeStream


@dataclass(frozen=True)
class HomeLoad:
    """A registered home, as a worker needs it: its index in the seeded population, its
    owner's token and its devices' ids."""

    index: int
    token: str
    device_ids: dict[str, str]


@dataclass(frozen=True)
class WorkerSpec:
    base_url: str
    seed: int
    homes: list[HomeLoad]
    start_ms: int  # on a quarter boundary
    interval_ms: int  # divides a quarter
    quarters_per_post: int
    concurrency: int


@dataclass(frozen=True)
class Post:
    home: int
    body: bytes
    readings: int
    quarters: list[tuple[str, int]]  # (device id, quarter start) that it fills completely


@dataclass(frozen=True)
class Sent:
    """A POST that the gateway accepted (202), with wall-clock times."""

    home: int
    readings: int
    sent_at: float
    accepted_at: float
    quarters: list[tuple[str, int]]


def _build(
    spec: WorkerSpec,
    accounts: dict[int, HomeAccount],
    streams: dict[int, HomeStream],
    rounds: int,
) -> list[Post]:
    """`rounds` POSTs per home, interleaved home by home so one home's come far apart."""
    instants = spec.quarters_per_post * QUARTER_MS // spec.interval_ms
    posts = []
    for _ in range(rounds):
        for h in spec.homes:
            account = accounts[h.index]
            samples = streams[h.index].take(instants)
            quarters = sorted(
                {(account.device_ids[s.device], s.ts - s.ts % QUARTER_MS) for s in samples}
            )
            posts.append(Post(h.index, readings_body(account, samples), len(samples), quarters))
    return posts


async def _post_all(
    spec: WorkerSpec,
    accounts: dict[int, HomeAccount],
    posts: Sequence[Post],
    rate: float | None,
    start_at: float,
    stopped: Callable[[], bool] = lambda: False,
) -> list[Sent]:
    """POST everything, `concurrency` at a time, paced to `rate` readings/s when given; no
    more once `stopped()` says so (what is in flight is still awaited)."""
    limits = httpx.Limits(max_connections=spec.concurrency)
    async with httpx.AsyncClient(timeout=300.0, limits=limits) as client:
        gateway = Gateway(client, spec.base_url)
        gate = asyncio.Semaphore(spec.concurrency)
        done: list[Sent] = []

        async def one(post: Post) -> None:
            try:
                sent_at = time.time()
                await gateway.post_readings(accounts[post.home], post.body)
                done.append(Sent(post.home, post.readings, sent_at, time.time(), post.quarters))
            finally:
                gate.release()

        await asyncio.sleep(max(0.0, start_at - time.time()))
        began, due = time.time(), 0.0
        tasks = []
        for post in posts:
            if stopped():
                break
            if rate:
                await asyncio.sleep(max(0.0, began + due - time.time()))
                due += post.readings / rate
            await gate.acquire()
            tasks.append(asyncio.create_task(one(post)))
        await asyncio.gather(*tasks)
    return done


def worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """The worker process: answers ("build", rounds), ("go", rate, start_at) and ("exit",);
    a ("stop",) received while it posts ends the posting early (and is ignored otherwise)."""
    gc.set_threshold(50_000)  # building bodies makes millions of short-lived objects
    try:
        homes = {h.index: Home.create(spec.seed, h.index) for h in spec.homes}
        accounts = {
            h.index: HomeAccount(homes[h.index], email_of(homes[h.index]), h.token, h.device_ids)
            for h in spec.homes
        }
        streams = {i: home.stream(spec.start_ms, spec.interval_ms) for i, home in homes.items()}
        posts: list[Post] = []
        while True:
            command, *args = conn.recv()
            if command == "build":
                posts = _build(spec, accounts, streams, *args)
                conn.send(("built", sum(p.readings for p in posts)))
            elif command == "go":
                stop = False

                def stopped() -> bool:
                    nonlocal stop
                    stop = stop or conn.poll()  # the only message it can be is a stop
                    return stop

                rate, start_at = args
                sent = asyncio.run(_post_all(spec, accounts, posts, rate, start_at, stopped))
                if stop:
                    conn.recv()
                conn.send(("done", sent))
            elif command == "stop":
                continue
            else:
                return
    except BaseException:
        conn.send(("error", traceback.format_exc()))


class Fleet:
    """The worker processes, driven phase by phase; every wait is bounded."""

    def __init__(self, specs: Sequence[WorkerSpec]) -> None:
        context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs = []
        for spec in specs:
            parent, child = context.Pipe()
            proc = context.Process(target=worker_main, args=(child, spec), daemon=True)
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)

    def _answers(self, expected: str, timeout_s: float) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        out = []
        for conn in self._conns:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"a load worker did not answer {expected!r} in {timeout_s} s")
            answer, value = conn.recv()
            if answer == "error":
                raise RuntimeError(f"a load worker failed:\n{value}")
            out.append(value)
        return out

    def build(self, rounds: int, timeout_s: float) -> int:
        """Have every worker build `rounds` POSTs per home; how many readings in all."""
        for conn in self._conns:
            conn.send(("build", rounds))
        return sum(self._answers("built", timeout_s))

    def run(self, rate: float | None, timeout_s: float) -> list[Sent]:
        """POST what was built, starting together, sharing `rate` (None: as fast as accepted)."""
        self.go(rate)
        return [s for sent in self._answers("done", timeout_s) for s in sent]

    def go(self, rate: float | None) -> None:
        """Start POSTing what was built, as `run` does, without waiting; `finish` ends it."""
        start_at = time.time() + 0.2
        share = rate / len(self._conns) if rate else None
        for conn in self._conns:
            conn.send(("go", share, start_at))

    def finish(self, timeout_s: float) -> list[Sent]:
        """Stop what `go` started (the POSTs in flight complete) and return what was sent."""
        for conn in self._conns:
            conn.send(("stop",))
        return [s for sent in self._answers("done", timeout_s) for s in sent]

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("exit",))
            except OSError:
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
