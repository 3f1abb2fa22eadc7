"""The stream sequence read from a JetStream ack subject is the one nats-py's full parse finds,
in both formats the server uses (without and with a domain and account)."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from infra.batch_pull import stream_sequence

REPLIES = [
    "$JS.ACK.EVENTS.projector.1.4217.4200.1764000000000000000.17",
    "$JS.ACK.EVENTS.projector.3.9.8.1764000000000000000.0",
    "$JS.ACK._.ACCOUNTHASH.EVENTS.projector.1.4217.4200.1764000000000000000.17.token",
    "$JS.ACK.hub.ACCOUNTHASH.EVENTS.projector.2.77.70.1764000000000000000.3.token",
]


@pytest.mark.parametrize("reply", REPLIES)
def test_stream_sequence_is_the_metadata_s(reply: str) -> None:
    msg = Msg(_client=None, subject="ns.evt.x", reply=reply)  # type: ignore[arg-type]
    assert stream_sequence(msg) == msg.metadata.sequence.stream
