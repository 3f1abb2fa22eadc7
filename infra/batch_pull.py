"""Batches from a JetStream pull consumer, without a timer per message.

nats-py's ``PullSubscription.fetch`` waits for each message of a batch with its own
``asyncio.wait_for``; at a thousand messages a batch that is most of the projector's time. Here
the messages land, through a subscription callback, in a buffer that a batch is taken from, and
a batch waits once: for the server's end of the request (the batch is full, or its status says
there are no more) or for the first message when none were waiting.

The pull requests are what ``fetch`` sends: first ``no_wait`` (what is there now), then, when
nothing was, one that waits up to ``timeout`` for the first message. A waiting request stays
open after its first message: the server delivers to it, up to its batch, whatever comes until
it expires. While it is open, a fetch sends no request at all; it takes what the open request
has delivered, or waits for its next message. So a consumer fed one event at a time (the normal
case) costs the server one request per ``timeout``, not two per event. Delivered messages wait
in the buffer for the next batch (unacknowledged, so they come back after the ack wait if this
process dies first).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import Header, StatusCode

_V1_ACK_TOKENS = 9
_V1_STREAM_SEQ = 5
_V2_STREAM_SEQ = 7
_ENDS_REQUEST = {StatusCode.NO_MESSAGES.value, StatusCode.REQUEST_TIMEOUT.value, StatusCode.CONFLICT.value}
"""No more messages now; the wait ran out; a limit or a leader change cut the request short
(nats-py's ``fetch`` takes these as an empty end too)."""


GRACE = 1.0
"""Seconds past its expiry after which a waiting request is taken as gone without the server's
word (a lost connection drops it silently)."""


class PullFailed(Exception):
    """The server answered a pull request with an error status (the consumer is gone, no JetStream)."""


def stream_sequence(msg: Msg) -> int:
    """The message's stream sequence, read from its ack subject (``msg.metadata`` parses all of
    the subject into objects, which costs more per message than applying the event)."""
    tokens = (msg.reply or "").split(".")
    return int(tokens[_V1_STREAM_SEQ] if len(tokens) == _V1_ACK_TOKENS else tokens[_V2_STREAM_SEQ])


class BatchPull:
    """Pulls batches from the durable (or ephemeral) consumer ``consumer`` on ``stream``."""

    def __init__(self, nc: Client, stream: str, consumer: str) -> None:
        self._nc = nc
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._buffer: list[Msg] = []
        self._wanted = 0
        self._open_left = 0
        """Messages the open waiting request may still deliver (0: none is open)."""
        self._open_until = 0.0
        """The loop time after which the open waiting request is taken as gone."""
        self._ended: asyncio.Future[None] | None = None
        self._failed: PullFailed | None = None
        self._sub: Subscription | None = None

    async def start(self) -> BatchPull:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._received)
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """Up to ``batch`` messages: those there now, or (when none are) the first to come within
        ``timeout``, with any that came along; ``[]`` when none came."""
        now = asyncio.get_running_loop().time
        if self._open_left > 0 and now() < self._open_until:
            if not self._buffer:
                await self._wait_for(self._waiting(until=1), self._open_until - now())
        else:
            if len(self._buffer) < batch:
                await self._request({"batch": batch - len(self._buffer), "no_wait": True}, until=batch, timeout=timeout)
            if not self._buffer:
                self._open_left, self._open_until = batch, now() + timeout + GRACE
                await self._request({"batch": batch, "expires": int(timeout * 1e9)}, until=1, timeout=timeout)
        taken, self._buffer = self._buffer[:batch], self._buffer[batch:]
        return taken

    async def _request(self, request: dict[str, object], *, until: int, timeout: float) -> None:
        """Send a pull request and wait for it (the wait is set up first: the answer may come
        before ``publish`` returns)."""
        ended = self._waiting(until)
        await self._nc.publish(self._next, json.dumps(request).encode(), reply=self._inbox)
        await self._wait_for(ended, timeout + GRACE)

    def _waiting(self, until: int) -> asyncio.Future[None]:
        """A future done when the buffer holds ``until`` messages or the request ends."""
        self._wanted = until
        self._ended = asyncio.get_running_loop().create_future()
        return self._ended

    async def _wait_for(self, ended: asyncio.Future[None], seconds: float) -> None:
        """Wait for ``ended``, or (a lost connection) ``seconds``; raise what the server refused."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended, seconds)
        self._ended = None
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed

    async def _received(self, msg: Msg) -> None:
        status = msg.headers.get(Header.STATUS) if msg.headers else None
        if status is None:
            self._buffer.append(msg)
            self._open_left = max(self._open_left - 1, 0)
            if len(self._buffer) >= self._wanted:
                self._end()
        elif status != StatusCode.CONTROL_MESSAGE.value:
            self._open_left = 0  # any other status ends the request it answers
            if status not in _ENDS_REQUEST and self._ended is not None:
                description = (msg.headers or {}).get(Header.DESCRIPTION, "").strip()
                answer = f"{status} {description}" if description else status
                self._failed = PullFailed(f"the pull request to {self._next} was answered {answer}")
            self._end()

    def _end(self) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)
