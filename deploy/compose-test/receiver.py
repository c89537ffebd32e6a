"""The webhook receiver of the compose test: stores each POST (path, headers, body as text)
and returns them all on GET /received, so the test can check the signature itself."""

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

received: list[dict] = []


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        received.append(
            {"path": self.path, "headers": dict(self.headers), "body": body.decode("utf-8")}
        )
        self.send_response(204)
        self.end_headers()

    def do_GET(self) -> None:
        payload = json.dumps(received).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
