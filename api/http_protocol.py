"""uvicorn's own answer to a request it cannot even parse (a broken request line, bad headers) is a
plain-text 400; ours is the same JSON error object as every other error, with a request id."""

from __future__ import annotations

import uuid

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.middleware import error_body


class JsonErrorsH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = error_body("bad_http_request", f"the request is not valid HTTP: {msg}", uuid.uuid4().hex)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body)):
            self.transport.write(self.conn.send(event))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()
