"""Real receivers for alert notifications in tests: an HTTP webhook endpoint on loopback that
answers with a scripted sequence of statuses, and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller

from tests.processes import free_port


@dataclass(frozen=True)
class Hit:
    """One request the webhook receiver got, and the status it answered."""

    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    def signed_by(self, secret: str) -> bool:
        expected = "sha256=" + hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("x-signature", ""), expected)


class WebhookReceiver:
    """Takes POSTs on loopback; answers the first `fail_first` with 500, the others with 200."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.fail_first = 0
        # When set, the first request waits (up to 10 s) for it before being answered.
        self.hold_first: threading.Event | None = None
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    first = not receiver.hits
                    status = 500 if len(receiver.hits) < receiver.fail_first else 200
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.hits.append(Hit(headers, body, status))
                if first and receiver.hold_first is not None:
                    receiver.hold_first.wait(10)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def delivered(self) -> list[Hit]:
        """The hits answered with success."""
        with self._lock:
            return [h for h in self.hits if h.status == 200]

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[Hit]:
        """Block (in a thread-friendly way) until `count` successful hits arrived."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.delivered()) >= count:
                return self.delivered()
            time.sleep(0.05)
        raise TimeoutError(f"{len(self.delivered())} of {count} webhook deliveries arrived")


class MailReceiver:
    """An aiosmtpd server on loopback keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.port = free_port()
        receiver = self

        class Handler:
            async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
                receiver.messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.url = f"smtp://127.0.0.1:{self.port}?from=alerts@example.com"

    def __enter__(self) -> MailReceiver:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def mailbox() -> Iterator[MailReceiver]:
    with MailReceiver() as receiver:
        yield receiver
