"""Private PostgreSQL and MariaDB servers, each in a temporary directory on a free port, that a
test may stop and start again (never the machine's shared servers).

Both keep what they committed when their process is killed (the outage the tests make), and
skip only what protects against the machine itself going down: PostgreSQL with `fsync=off`,
MariaDB writing its log to the OS at every commit (`innodb_flush_log_at_trx_commit=2`; with 0 a
killed server loses up to a second of commits, which the fault suite caught as a notified alert
that no longer existed).

Both are started from the binaries the machine has (`initdb`/`pg_ctl`, `mariadb-install-db`/
`mariadbd`); without them the test skips, or fails under CI=true, naming the leg. PostgreSQL
refuses to run as root, so as root it runs as the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.backends import IN_CI, reachable
from tests.processes import free_port


def _missing(leg: str, what: str) -> None:
    if IN_CI:
        pytest.fail(f"{leg} leg: {what} not installed, and CI=true requires it")
    pytest.skip(f"{leg} leg skipped: {what} not installed")


def _wait(port: int, up: bool, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while reachable("127.0.0.1", port) != up:
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} still {'down' if up else 'up'} after {timeout_s}s")
        time.sleep(0.1)


class PrivatePostgres:
    def __init__(self, root: Path) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            _missing("private PostgreSQL", "pg_ctl")
        self.bin = Path(bins[-1]).parent
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        # pytest's temporary directories are root's alone: the postgres user needs its own.
        self.root = Path(tempfile.mkdtemp(prefix="et-pg-")) if self._as else root
        self.data = self.root / "pgdata"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.data.mkdir(parents=True)
        if self._as:
            self.root.chmod(0o755)
            shutil.chown(self.data, "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.data / "server.log")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "start")
        _wait(self.port, up=True)

    def kill(self) -> None:
        """Stop at once, as a crash would: open connections are cut mid-query."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        _wait(self.port, up=False)


class PrivateMariaDB:
    def __init__(self, root: Path) -> None:
        server, install = shutil.which("mariadbd"), shutil.which("mariadb-install-db")
        if not server or not install:
            _missing("private MariaDB", "mariadbd / mariadb-install-db")
        self.server = server or ""
        self.data = root / "mariadb"
        self.port = free_port()
        self.url = f"mysql://root@127.0.0.1:{self.port}/test"
        self.proc: subprocess.Popen[bytes] | None = None
        subprocess.run(
            [
                install or "",
                "--no-defaults",
                f"--datadir={self.data}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.server,
                "--no-defaults",
                f"--datadir={self.data}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.data}/mysqld.sock",
                f"--pid-file={self.data}/mysqld.pid",
                "--user=root",
                "--innodb-buffer-pool-size=16M",
                "--innodb-flush-log-at-trx-commit=2",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.data / "server.log").open("ab"),
        )
        _wait(self.port, up=True, timeout_s=60)
        subprocess.run(
            [
                "mariadb",
                "--no-defaults",
                "-uroot",
                f"--socket={self.data}/mysqld.sock",
                "-e",
                "CREATE DATABASE IF NOT EXISTS test",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def kill(self) -> None:
        """SIGKILL, as a crash would: open connections are cut mid-query."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        _wait(self.port, up=False)


@contextmanager
def private_postgres(root: Path) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(root)
    server.start()
    try:
        yield server
    finally:
        if reachable("127.0.0.1", server.port):
            server.kill()
        if server.root != root:
            shutil.rmtree(server.root, ignore_errors=True)


@contextmanager
def private_mariadb(root: Path) -> Iterator[PrivateMariaDB]:
    server = PrivateMariaDB(root)
    server.start()
    try:
        yield server
    finally:
        server.kill()
