"""Runs `energy-tracker` commands as real processes for the end-to-end tests: one process
(`running`, `running_up`), a split deployment (`split_deployment`), or one command
(`run_command`); and an in-process app served for real on a port (`served`)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from energy_tracker.config import Settings

# Every server a process could reach; `embedded_env` clears them all, so that nothing comes in
# from the environment pytest runs in.
SERVER_URLS = (
    "ET_BUS_URL",
    "ET_DB_URL",
    "ET_TSDB_URL",
    "ET_REDIS_URL",
    "ET_MQTT_URL",
    "ET_SMTP_URL",
)


def embedded_settings(tmp_path: Path, jwt_secret: str, **options: Any) -> Settings:
    """Settings of an in-process app on the embedded stores under `tmp_path/data`; `options`
    override any of them (a store on a private server, say)."""
    data = tmp_path / "data"
    stores = {
        "bus_url": f"embedded:///{data}/bus.db",
        "db_url": f"sqlite:///{data}/meta.db",
        "tsdb_url": f"sqlite:///{data}/series.db",
    }
    return Settings(data_dir=data, jwt_secret=jwt_secret, **(stores | options))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def served(app: Any, port: int) -> AsyncIterator[str]:
    """`app` served by uvicorn on 127.0.0.1:`port` in a task of the test's loop (streams need a
    real server: httpx's ASGI transport waits for a response's end); its base URL. Waits for
    the start however loaded the machine is (the test's own timeout bounds it), failing at once
    if the server stopped instead."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()  # why it stopped
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 60)


def embedded_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The environment of a process with every backend embedded in `tmp_path`/data, listening
    on a free ET_HTTP_PORT; `overrides` name a server, or set anything else."""
    return {
        "ET_DATA_DIR": str(tmp_path / "data"),
        "ET_HTTP_PORT": str(free_port()),
        **dict.fromkeys(SERVER_URLS, ""),
        **overrides,
    }


class ServiceProcess:
    """One `energy-tracker` process, its log in a file, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.args = args
        self.env = dict(env)
        self.log_path = log_path
        self._log = log_path.open("wb")
        full_env = {**os.environ, **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "energy_tracker.cli", *args],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.port = int(env["ET_HTTP_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args} exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.args} not healthy after {timeout_s}s:\n{self.log()}")

    def has_logged(self, text: str, times: int = 1, timeout_s: float = 60.0) -> bool:
        """Whether `text` is in the whole log `times` times, waiting up to `timeout_s` for it
        (a request's line follows its response)."""
        deadline = time.monotonic() + timeout_s
        while self.log_path.read_text(errors="replace").count(text) < times:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no clean-up runs."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._log.close()

    def respawn(self, log_path: Path) -> ServiceProcess:
        """The same command started again with the same environment (as a supervisor would),
        logging to `log_path`; not yet healthy."""
        return ServiceProcess(self.args, self.env, log_path)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def run_command(
    args: list[str], env: Mapping[str, str], timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "energy_tracker.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@contextmanager
def running(args: list[str], env: Mapping[str, str], log_path: Path) -> Iterator[ServiceProcess]:
    """The process of `energy-tracker *args`, once healthy; stopped afterwards."""
    proc = ServiceProcess(args, env, log_path)
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.stop()


@contextmanager
def running_up(tmp_path: Path, *options: str, **overrides: str) -> Iterator[ServiceProcess]:
    """`energy-tracker *options up` on `embedded_env(tmp_path, **overrides)`, logging to
    `tmp_path`/up.log, once healthy; stopped afterwards."""
    with running([*options, "up"], embedded_env(tmp_path, **overrides), tmp_path / "up.log") as p:
        yield p


@contextmanager
def split_deployment(
    tmp_path: Path,
    services: Sequence[str],
    env: Mapping[str, str],
    gateways: Sequence[str] = ("gateway",),
) -> Iterator[dict[str, ServiceProcess]]:
    """Each of `services` in its own `serve` process and, last, each of `gateways` (a name of
    one's own, such as gateway_a, each serving the gateway) with ET_<SERVICE>_URL set for every
    service, on `embedded_env(tmp_path, **env)` once `migrate` has run on it. Yields the
    processes by name once all are healthy; stops them afterwards."""
    ports = {name: free_port() for name in (*services, *gateways)}
    common = {
        **embedded_env(tmp_path, **env),
        **{f"ET_{name.upper()}_URL": f"http://127.0.0.1:{ports[name]}" for name in services},
    }
    migrated = run_command(["migrate"], common)
    assert migrated.returncode == 0, migrated.stderr
    procs: dict[str, ServiceProcess] = {}
    try:
        for name, port in ports.items():
            procs[name] = ServiceProcess(
                ["serve", "gateway" if name in gateways else name],
                {**common, "ET_HTTP_PORT": str(port)},
                tmp_path / f"{name}.log",
            )
        for proc in procs.values():
            proc.wait_healthy()
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()
