"""A small HTTP notification receiver for tests: records what it is sent, in a thread."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, status: int = 200, port: int = 0) -> None:
        self.status = status
        self.received: list[tuple[dict[str, str], Any, float]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                with outer._lock:
                    outer.received.append((dict(self.headers), body, time.time()))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/notify"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def bodies(self) -> list[Any]:
        with self._lock:
            return [body for _, body, _ in self.received]

    def wait_for(self, count: int, timeout: float = 10) -> list[Any]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(self.bodies) >= count:
                return self.bodies
            time.sleep(0.02)
        raise AssertionError(f"expected {count} notifications, got {len(self.bodies)}")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
