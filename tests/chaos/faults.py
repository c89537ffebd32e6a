"""The faults of a chaos trial: a supervisor that kill -9s a service and starts it again, and
outages of the servers the services lean on (the broker, MariaDB, PostgreSQL), run one after
another by the chaos thread while the driver streams readings.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.processes import ServiceProcess


class Fleet:
    """The processes of a deployment by name, each restarted after a kill as a supervisor
    (systemd's Restart=always, compose's restart: always) would."""

    def __init__(self, procs: dict[str, ServiceProcess], logs: Path) -> None:
        self.procs = procs  # the caller's dict: whoever stops the deployment stops the new ones
        self.logs = logs
        self.kills: list[str] = []
        self.unplanned_exits: list[str] = []

    def kill_and_restart(self, name: str) -> None:
        """SIGKILL `name`, start it again at once, and wait until it answers /healthz."""
        old = self.procs[name]
        old.kill()
        self.kills.append(name)
        self._start_again(name, old)

    def check(self) -> None:
        """Restart (and record) any process that exited although nobody killed it."""
        for name, proc in list(self.procs.items()):
            if proc.proc.poll() is not None:
                self.unplanned_exits.append(f"{name} exited {proc.proc.returncode}: {proc.log()}")
                proc.kill()
                self._start_again(name, proc)

    def _start_again(self, name: str, old: ServiceProcess) -> None:
        new = old.respawn(self.logs / f"{name}.{len(self.kills)}.{len(self.unplanned_exits)}.log")
        self.procs[name] = new
        new.wait_healthy(timeout_s=120)


@dataclass(frozen=True)
class Outage:
    """A server taken away for `seconds` and brought back: `stop` then `start`."""

    name: str
    seconds: float
    stop: Callable[[], None]
    start: Callable[[], None]


def frozen_broker(proc: subprocess.Popen[bytes], seconds: float) -> Outage:
    """The broker stopped (SIGSTOP) and continued (SIGCONT): its clients' requests and
    heartbeats go unanswered meanwhile. Tansu keeps its log in memory, so a killed Tansu would
    lose what it had acknowledged, which a broker with a disk would not: stopping the process
    is the outage it can survive with its log intact."""
    return Outage(
        "broker",
        seconds,
        lambda: os.kill(proc.pid, signal.SIGSTOP),
        lambda: os.kill(proc.pid, signal.SIGCONT),
    )


@dataclass
class ChaosLog:
    """What the chaos thread did, for the trial's report."""

    outages: list[str] = field(default_factory=list)
    error: BaseException | None = None


class Chaos(threading.Thread):
    """Every `every_s` seconds, kill -9 a random one of `targets` (and restart it); between
    kills, the `outages` in turn. Goes on until every outage has happened (`outages_over`) and
    `stream_done` is set; the driver learns which outage is in force through `set_fault`."""

    def __init__(
        self,
        fleet: Fleet,
        targets: list[str],
        outages: list[Outage],
        every_s: float,
        rng: random.Random,
        stream_done: threading.Event,
        set_fault: Callable[[str], None],
    ) -> None:
        super().__init__(name="chaos", daemon=True)
        self.fleet = fleet
        self.targets = targets
        self.outages = list(outages)
        self.every_s = every_s
        self.rng = rng
        self.stream_done = stream_done
        self.set_fault = set_fault
        self.log = ChaosLog()
        self.outages_over = threading.Event()  # the driver streams on until it is set
        self._stop_now = threading.Event()

    def run(self) -> None:
        try:
            pending = list(self.outages)
            while not self._stop_now.is_set():
                if not pending:
                    self.outages_over.set()
                    if self.stream_done.wait(self.every_s):
                        break
                else:
                    self._stop_now.wait(self.every_s)
                self.fleet.kill_and_restart(self.rng.choice(self.targets))
                if pending:
                    self._outage(pending.pop(0))
                self.fleet.check()
        except BaseException as exc:  # reported by the trial, which fails on it
            self.log.error = exc
        finally:
            self.outages_over.set()

    def _outage(self, outage: Outage) -> None:
        self.set_fault(outage.name)
        outage.stop()
        try:
            self._stop_now.wait(outage.seconds)
        finally:
            outage.start()
            self.set_fault("")
        self.log.outages.append(f"{outage.name} {outage.seconds:g} s")

    def finish(self) -> None:
        """Wait for the thread (it ends once the stream is done); re-raise what it hit."""
        self.join()
        if self.log.error is not None:
            raise self.log.error
