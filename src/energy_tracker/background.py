"""The second process of `energy-tracker up`: one Python process is one core, so `up` runs the
busiest consumer (usage: every reading parsed, stored and integrated into buckets) in a child
process over the same embedded bus and stores, while the first process serves HTTP, ingestion
and the lighter consumers.

Why it is shaped this way:

- The child is `energy-tracker consume SERVICE`: the same service wiring as `serve`, without
  HTTP (`app.create_app(..., gateway=False)` and its lifespan), so there is one place that says
  how a service is built. It shares the bus and stores through their files: the embedded bus
  takes several writer processes (WAL, BEGIN IMMEDIATE, a busy timeout, one consumer-group
  member per process), and the SQLite stores are WAL files with a busy timeout.
- The parent supervises it as one of its background workers (`ChildProcess`): `/readyz` says
  when it is not running (or not started yet: until its metrics answer), a crash is logged
  and the child started again after a pause, and stopping `up` (SIGTERM, Ctrl-C) stops it
  gracefully (SIGTERM, its offsets committed) before the parent exits. If the parent dies
  without stopping it (kill -9), the kernel sends the child SIGTERM (PR_SET_PDEATHSIG), so no
  orphan keeps consuming.
- The child's Prometheus metrics are served on a loopback port only the parent knows and merged
  into the parent's `/metrics`, so `up` still has one `/metrics` with every consumer's lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import socket
import sys
from collections.abc import Iterable
from typing import Any

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

RESTART_PAUSE_S = 1.0
"""How long a crashed child waits before it is started again (at most once a second)."""
STOP_TIMEOUT_S = 8.0
"""How long a stopping child may take to commit its offsets before it is killed: within the
10 s a container runtime grants the whole of `up`."""
_START_POLL_S = 0.2
_PR_SET_PDEATHSIG = 1
# The interpreter's own metrics are the parent's to report; the child's would repeat their names.
_PROCESS_FAMILIES = ("process_", "python_")


try:  # looked up here, not between fork and exec, where only the call itself is safe
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: a parent killed hard leaves its child running
    _prctl = None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent goes, however it goes (Linux)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChildProcess:
    """A background worker of `up` that keeps `energy-tracker consume SERVICE` running."""

    def __init__(self, service: str, log_level: str) -> None:
        self.service = service
        self.log_level = log_level
        self.metrics_port = _free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._started = False

    @property
    def ready(self) -> bool:
        """Running, and started: its metrics answer once its consumers are wired."""
        return self._started and self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.ready and self.proc is not None else None

    async def _start(self) -> asyncio.subprocess.Process:
        argv = [sys.executable, "-m", "energy_tracker.cli", "--log-level", self.log_level]
        argv += ["consume", "--metrics-port", str(self.metrics_port), self.service]
        # stdout and stderr are the parent's: one log for all of `up`.
        return await asyncio.create_subprocess_exec(*argv, preexec_fn=_die_with_parent)

    async def run(self) -> None:
        while not self._stopping.is_set():
            self._started = False
            self.proc = await self._start()
            stopping = asyncio.create_task(self._stopping.wait())
            exited = asyncio.create_task(self.proc.wait())
            try:
                await self._until_started(exited)
                await asyncio.wait({stopping, exited}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                if not exited.done():
                    await self._terminate(self.proc)
                exited.cancel()
            if self._stopping.is_set():
                return
            log.error(
                "the %s process exited with %s; starting it again", self.service, exited.result()
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), RESTART_PAUSE_S)

    async def _until_started(self, exited: asyncio.Task[int]) -> None:
        """Wait until the child's metrics answer (it is wired), it exits, or up stops."""
        while not (exited.done() or self._stopping.is_set()):
            if await self._get_metrics() is not None:
                self._started = True
                return
            await asyncio.sleep(_START_POLL_S)

    async def _get_metrics(self) -> str | None:
        """GET /metrics from the child (HTTP/1.0, as prometheus_client serves it); None when
        it does not answer. By hand rather than through an HTTP client, which would log a line
        for every scrape."""
        try:
            async with asyncio.timeout(2.0):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.metrics_port)
                try:
                    writer.write(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    await writer.drain()
                    answer = await reader.read()
                finally:
                    writer.close()
        except (OSError, TimeoutError):
            return None
        head, _, body = answer.partition(b"\r\n\r\n")
        return body.decode() if head.split(b" ", 2)[1:2] == [b"200"] else None

    @staticmethod
    async def _terminate(proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("the child process %d did not stop in time; killing it", proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def stop(self) -> None:
        self._stopping.set()

    async def metrics(self) -> str:
        """The child's metrics in the text format; empty while it is not answering."""
        return (await self._get_metrics() or "") if self.ready else ""


def merged_metrics(texts: Iterable[str]) -> bytes:
    """This process's metrics with the children's (`texts`) merged in, family by family, so
    that each name appears once (a consumer lag from every process under one family)."""
    families: dict[str, Any] = {f.name: f for f in REGISTRY.collect()}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name.startswith(_PROCESS_FAMILIES):
                continue
            if family.name in families:
                families[family.name].samples += family.samples
            else:
                families[family.name] = family

    class Merged:
        def collect(self) -> Iterable[Any]:
            return families.values()

    return generate_latest(Merged())  # any object with collect() will do
