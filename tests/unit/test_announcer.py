"""A run's events go out in order without the saga waiting for each ack; a failed publish stops
the ones after it; an abandoned run publishes nothing more."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from consumers.agent.runner import Announcer
from schemas.envelope import Envelope
from schemas.events import ProjectCreated


def events(count: int) -> list[Envelope]:
    correlation = uuid.uuid4()
    return [
        Envelope.wrap(
            ProjectCreated(name=f"p{n}", plan="free"),
            correlation_id=correlation,
            sequence=n,
            actor="t",
            project_id=correlation,
        )
        for n in range(count)
    ]


async def test_events_go_out_in_order_however_long_each_ack_takes() -> None:
    sent: list[int] = []

    async def publish(envelope: Envelope) -> None:
        await asyncio.sleep(random.random() / 100)  # acks of varying delay
        sent.append(envelope.sequence)

    announcer = Announcer(publish)
    for envelope in events(20):
        announcer.announce(envelope)  # returns at once
    assert sent == []
    await announcer.flush()
    assert sent == list(range(20))


async def test_a_failed_publish_stops_the_later_ones_and_flush_says_why() -> None:
    sent: list[int] = []

    async def publish(envelope: Envelope) -> None:
        await asyncio.sleep(0)
        if envelope.sequence == 3:
            raise TimeoutError("no ack")
        sent.append(envelope.sequence)

    announcer = Announcer(publish)
    for envelope in events(6):
        announcer.announce(envelope)
    with pytest.raises(TimeoutError):
        await announcer.flush()
    assert sent == [0, 1, 2]


async def test_an_abandoned_run_publishes_nothing_more() -> None:
    sent: list[int] = []
    gate = asyncio.Event()

    async def publish(envelope: Envelope) -> None:
        await gate.wait()
        sent.append(envelope.sequence)

    announcer = Announcer(publish)
    for envelope in events(5):
        announcer.announce(envelope)
    await announcer.abandon()  # before any of them ran
    gate.set()
    await asyncio.sleep(0.01)
    assert sent == []
