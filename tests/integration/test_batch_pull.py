"""Batches from a pull consumer on a real NATS server: what is there now comes at once, a batch
that finds nothing waits for the first message, messages that come one at a time share one
waiting request, the server's refusal is an error, and the sequences read from the ack subject
are the stream's."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from devstack.stack import Stack
from infra.batch_pull import BatchPull, PullFailed, stream_sequence
from schemas.subjects import Subjects

SETTLED = 20.0
"""How long a test waits for what must happen (a generous bound, not a measurement)."""
LONG = 30.0
"""A fetch's timeout that a test must never sit out: the fetch returns well before it."""


@pytest.fixture
def stack_processes() -> tuple[str, ...]:
    return ()  # the servers (NATS with the platform's streams) and no process


@dataclass
class Consumer:
    nc: Client
    stream: str
    subject: str
    name: str

    async def publish(self, count: int) -> list[int]:
        """Publish ``count`` messages; their stream sequences."""
        js = self.nc.jetstream()
        return [(await js.publish(self.subject, f"m{n}".encode())).seq for n in range(count)]


@pytest.fixture
async def consumer(stack: Stack) -> AsyncIterator[Consumer]:
    """A durable consumer of its own subject on the events stream, explicitly acked like the projector's."""
    subjects = Subjects(namespace=stack.namespace)
    nc = await nats.connect(**stack.nats())
    name, subject = f"pull_{uuid.uuid4().hex[:8]}", subjects.event(f"pgplane.test.{uuid.uuid4().hex[:8]}")
    config = ConsumerConfig(durable_name=name, filter_subject=subject, ack_policy=AckPolicy.EXPLICIT)
    await nc.jetstream().add_consumer(subjects.events_stream, config)
    yield Consumer(nc, subjects.events_stream, subject, name)
    await nc.close()


async def test_what_is_there_comes_at_once_in_batches(consumer: Consumer) -> None:
    sequences = await consumer.publish(25)
    pull = await BatchPull(consumer.nc, consumer.stream, consumer.name).start()
    first = await asyncio.wait_for(pull.fetch(10, timeout=LONG), SETTLED)
    rest = await asyncio.wait_for(pull.fetch(100, timeout=LONG), SETTLED)  # fewer there than asked for
    assert [m.data for m in first] == [f"m{n}".encode() for n in range(10)]
    assert [stream_sequence(m) for m in [*first, *rest]] == sequences
    assert [stream_sequence(m) for m in rest] == [m.metadata.sequence.stream for m in rest]
    for msg in [*first, *rest]:
        await msg.ack_sync()  # the server confirms each ack before the count below is read
    info = await consumer.nc.jetstream().consumer_info(consumer.stream, consumer.name)
    assert info.num_ack_pending == 0 and info.num_pending == 0
    await pull.stop()


async def test_an_empty_batch_waits_for_the_first_message(consumer: Consumer) -> None:
    pull = await BatchPull(consumer.nc, consumer.stream, consumer.name).start()
    assert await pull.fetch(10, timeout=0.5) == []
    waiting = asyncio.create_task(pull.fetch(10, timeout=LONG))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    [sequence] = await consumer.publish(1)
    batch = await asyncio.wait_for(waiting, SETTLED)
    assert [stream_sequence(m) for m in batch] == [sequence]
    await pull.stop()


async def test_messages_that_come_one_at_a_time_share_one_waiting_request(consumer: Consumer) -> None:
    """The projector's normal case: each event is fetched alone, and the server sees two pull
    requests in all (what is there now, then one that waits), not two per event."""
    requests: list[object] = []

    async def seen(msg: Msg) -> None:
        requests.append(json.loads(msg.data))

    snoop = await consumer.nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{consumer.stream}.{consumer.name}", cb=seen)
    pull = await BatchPull(consumer.nc, consumer.stream, consumer.name).start()
    for _ in range(5):
        waiting = asyncio.create_task(pull.fetch(10, timeout=LONG))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        [sequence] = await consumer.publish(1)
        batch = await asyncio.wait_for(waiting, SETTLED)
        assert [stream_sequence(m) for m in batch] == [sequence]
    await consumer.nc.flush()
    assert requests == [{"batch": 10, "no_wait": True}, {"batch": 10, "expires": int(LONG * 1e9)}]
    await snoop.unsubscribe()
    await pull.stop()


async def test_a_waiting_request_that_expired_is_replaced(consumer: Consumer) -> None:
    """The server ends an expired request with a status even after it delivered some of its
    batch; the next fetch sends a new one instead of waiting on the dead one."""
    pull = await BatchPull(consumer.nc, consumer.stream, consumer.name).start()
    waiting = asyncio.create_task(pull.fetch(10, timeout=0.5))
    await asyncio.sleep(0.1)
    [first] = await consumer.publish(1)
    assert [stream_sequence(m) for m in await asyncio.wait_for(waiting, SETTLED)] == [first]
    await asyncio.sleep(1.0)  # past the request's expiry, within its grace
    waiting = asyncio.create_task(pull.fetch(10, timeout=LONG))
    await asyncio.sleep(0.1)
    [second] = await consumer.publish(1)
    assert [stream_sequence(m) for m in await asyncio.wait_for(waiting, SETTLED)] == [second]
    await pull.stop()


async def test_a_consumer_that_is_not_there_is_an_error(consumer: Consumer) -> None:
    pull = await BatchPull(consumer.nc, consumer.stream, "no_such_consumer").start()
    with pytest.raises(PullFailed, match="503"):
        await asyncio.wait_for(pull.fetch(10, timeout=LONG), SETTLED)
    await pull.stop()
