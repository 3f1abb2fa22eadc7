"""A webhook receiver on loopback for the tests: records every request, answers as told."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    url: str
    answer: Callable[[Received], int] = lambda _: 204
    """The status for a request (given what came before it in ``requests``)."""
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def delivered(self) -> list[Received]:
        """The requests answered 2xx, once per ``webhook-id`` (a receiver dedupes by it)."""
        seen: dict[str, Received] = {}
        with self.lock:
            for request in self.requests:
                if 200 <= request.answered < 300:
                    seen.setdefault(request.headers["webhook-id"], request)
        return list(seen.values())

    def attempts(self, webhook_id: str) -> list[int]:
        with self.lock:
            return [r.answered for r in self.requests if r.headers.get("webhook-id") == webhook_id]


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    receiver = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            request = Received({k.lower(): v for k, v in self.headers.items()}, body, 0)
            with receiver.lock:
                request.answered = receiver.answer(request)
                receiver.requests.append(request)
            self.send_response(request.answered)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/pgplane"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
