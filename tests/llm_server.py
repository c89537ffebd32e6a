"""A small OpenAI-compatible chat-completions server on loopback, for the narrative's tests:
POST to /facts answers a text of the facts it was sent; a path of ANSWERS answers that text;
/slow answers after 2 s, /broken with a 500, /garbage with no JSON, /shape without choices.
Every request body is kept in Endpoint.requests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

ANSWERS: dict[str, str] = {}


class Endpoint(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Endpoint.requests.append(body)
        if self.path == "/slow":
            time.sleep(2.0)
            self._answer("Too late.")
        elif self.path == "/broken":
            self._send(500, b'{"error": "model not loaded"}')
        elif self.path == "/garbage":
            self._send(200, b"<html>not json</html>")
        elif self.path == "/shape":
            self._send(200, b'{"choices": []}')
        elif self.path == "/facts":  # a text of the always-on power it was given, or none
            facts = json.loads(body["messages"][1]["content"])
            watts = facts.get("always_on_w")
            self._answer("No history yet." if watts is None else f"Always on: {watts} W.")
        else:
            self._answer(ANSWERS[self.path])

    def _answer(self, content: str) -> None:
        answer = {"choices": [{"message": {"role": "assistant", "content": content}}]}
        self._send(200, json.dumps(answer).encode())

    def _send(self, status: int, payload: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except BrokenPipeError:  # the client gave up waiting (the slow answer)
            pass

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serving() -> Iterator[str]:
    """The server's base URL while it runs."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
