"""Who may publish and subscribe to what on the bus: one NATS user per process role, least privilege.

- only the API and the scheduler publish commands (the scheduler only backup commands and the
  reconciler's repairs);
- an agent reads only its own host's commands (through its durable) and publishes events, its
  dead letters and its heartbeat; it answers its host's key-service requests (from the API);
- the projector reads events (through its durable, and by sequence where a crash left a gap) and
  publishes its heartbeat;
- the operator role (``pgplane migrate bus``, replays, dead-letter tools) has the whole
  JetStream API: it is the only role that creates or changes streams and consumers.

Each role receives replies only on its own inbox prefix (``_INBOX.<user>``), so no role can read
another's JetStream replies (pull consumers deliver messages as replies). ``nats.conf`` shows the
same rules for a production server; the dev stack writes them from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.commands import OperationKind
from schemas.subjects import Subjects

JS = "$JS.API"


@dataclass(frozen=True)
class Role:
    user: str
    publish: list[str]
    subscribe: list[str]
    answers_requests: bool = False
    """It may reply to the requests it receives (NATS ``allow_responses``): the agent's key service."""

    @property
    def inbox(self) -> str:
        return f"_INBOX.{self.user}"


def _role(user: str, publish: list[str]) -> Role:
    return Role(user=user, publish=publish, subscribe=[f"_INBOX.{user}.>"])


def _pull(stream: str, durable: str) -> list[str]:
    return [
        f"{JS}.CONSUMER.INFO.{stream}.{durable}",
        f"{JS}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def api(s: Subjects) -> Role:
    return _role(
        f"{s.namespace}-api",
        [
            s.all_commands(),
            s.all_events(),
            s.key_service("*"),
            f"{JS}.CONSUMER.INFO.{s.events_stream}.{s.projector_durable}",
            f"{JS}.STREAM.INFO.{s.heartbeats_stream}",
            f"{JS}.STREAM.MSG.GET.{s.heartbeats_stream}",
            f"{JS}.STREAM.INFO.{s.dead_letter_stream}",  # its depth, in /metrics
        ],
    )


def scheduler(s: Subjects) -> Role:
    kinds = (
        OperationKind.BACKUP,
        OperationKind.DELETE_BACKUP,
        OperationKind.REPAIR,
        OperationKind.SUSPEND,  # an organization past its payment's grace period
        OperationKind.RESUME,
    )
    return _role(f"{s.namespace}-scheduler", [*(s.command("*", kind) for kind in kinds), s.all_events()])


def agent(s: Subjects, host_id: str) -> Role:
    user = f"{s.namespace}-agent-{host_id}"
    publish = [
        *_pull(s.commands_stream, s.agent_durable(host_id)),
        s.all_events(),
        s.dead_letter(host_id),
        s.heartbeat(f"agent.{host_id}"),
    ]
    return Role(user, publish, [f"_INBOX.{user}.>", s.key_service(host_id)], answers_requests=True)


def projector(s: Subjects) -> Role:
    return _role(
        f"{s.namespace}-projector",
        [
            *_pull(s.events_stream, s.projector_durable),
            f"{JS}.STREAM.MSG.GET.{s.events_stream}",  # events a crashed projector's batch held back
            s.heartbeat(s.projector_durable),
        ],
    )


def operator(s: Subjects) -> Role:
    return Role(user=f"{s.namespace}-operator", publish=[">"], subscribe=[">"])


def roles(s: Subjects, host_ids: list[str]) -> list[Role]:
    return [api(s), scheduler(s), projector(s), operator(s), *(agent(s, host) for host in host_ids)]
