"""uvicorn's own answer to a request it cannot even parse (a broken request line, bad headers) is a
plain-text 400; ours is the same JSON error object as every other error, with a request id."""

from __future__ import annotations

import uuid

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from api.middleware import error_body


class JsonErrorsHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        body = error_body("bad_http_request", f"the request is not valid HTTP: {msg}", uuid.uuid4().hex)
        head = [
            STATUS_LINE[400],
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
