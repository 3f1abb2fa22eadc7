"""Subject and stream names. Every name starts with the deployment's namespace."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.commands import OperationKind


@dataclass(frozen=True, kw_only=True)
class Subjects:
    namespace: str

    @property
    def commands_stream(self) -> str:
        return f"{self.namespace.upper()}_CMDS"

    @property
    def events_stream(self) -> str:
        return f"{self.namespace.upper()}_EVENTS"

    @property
    def heartbeats_stream(self) -> str:
        return f"{self.namespace.upper()}_HEARTBEATS"

    def heartbeat(self, name: str) -> str:
        """``agent.host-1`` → ``<ns>.heartbeat.agent.host-1``."""
        return f"{self.namespace}.heartbeat.{name}"

    def heartbeat_name(self, subject: str) -> str:
        return subject.removeprefix(f"{self.namespace}.heartbeat.")

    @property
    def dead_letter_stream(self) -> str:
        return f"{self.namespace.upper()}_DLQ"

    @property
    def advisories_stream(self) -> str:
        """Where the server's MAX_DELIVERIES advisories about commands are kept until collected."""
        return f"{self.namespace.upper()}_ADVISORIES"

    def max_deliveries(self, stream: str) -> str:
        """The advisory JetStream sends when a message of ``stream`` ran out of deliveries."""
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.*"

    def command(self, host_id: str, kind: OperationKind) -> str:
        return f"{self.namespace}.cmd.{host_id}.database.{kind.value}"

    def host_commands(self, host_id: str) -> str:
        return f"{self.namespace}.cmd.{host_id}.>"

    def all_commands(self) -> str:
        return f"{self.namespace}.cmd.>"

    def command_host(self, subject: str) -> str:
        """``<ns>.cmd.<host>.database.<kind>`` → ``<host>``."""
        return subject.removeprefix(f"{self.namespace}.cmd.").split(".", 1)[0]

    def event(self, event_type: str) -> str:
        """``pgplane.database.created`` → ``<ns>.evt.database.created``."""
        return f"{self.namespace}.evt.{event_type.removeprefix('pgplane.')}"

    def all_events(self) -> str:
        return f"{self.namespace}.evt.>"

    def key_service(self, host_id: str) -> str:
        """Where a data host answers requests for one backup's data key (request and reply)."""
        return f"{self.namespace}.keys.{host_id}"

    def dead_letter(self, host_id: str) -> str:
        return f"{self.namespace}.dlq.{host_id}"

    def all_dead_letters(self) -> str:
        return f"{self.namespace}.dlq.>"

    def agent_durable(self, host_id: str) -> str:
        return f"agent-{host_id}"

    projector_durable = "projector"
