"""A client's idle keep-alive connection stays usable. uvicorn closes one after 5 s by default: a
client (or a load balancer) that sends its next request as the server closes it gets no answer."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from devstack.stack import Stack

IDLE_SECONDS = 6  # longer than uvicorn's default keep-alive


async def liveness(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> bytes:
    writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:] if line)
    await reader.readexactly(int(fields[b"content-length"]))
    return head


async def test_an_idle_connection_answers_its_next_request(stack: Stack) -> None:
    api = urlsplit(stack.api_url)
    reader, writer = await asyncio.open_connection(api.hostname, api.port)
    try:
        assert (await liveness(reader, writer, api.netloc)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(IDLE_SECONDS)
        assert (await liveness(reader, writer, api.netloc)).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
