"""All configuration, read from environment variables prefixed ``PGPLANE_``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """One settings class for every process; each process reads the fields it needs."""

    model_config = SettingsConfigDict(env_prefix="PGPLANE_", extra="ignore")

    state_dir: Path = Path(".pgplane")

    # message bus
    nats_url: str = "nats://127.0.0.1:4222"
    namespace: str = Field(
        default="pgplane",
        pattern=r"^[a-z][a-z0-9]{0,30}$",
        description="Prefix of every subject, stream and durable: several platforms can share a NATS.",
    )
    max_attempts: int = Field(default=5, ge=1, description="Deliveries of a command before dead-lettering.")
    ack_wait_seconds: float = 30.0
    retry_delay_seconds: float = Field(default=1.0, description="First redelivery delay; doubles per attempt.")

    # metadata database (API and projector; never a superuser)
    metadata_dsn: str = "postgresql://pgplane_control@127.0.0.1:5432/pgplane_meta"

    # data host (agent only: the one process holding superuser credentials)
    host_id: str = Field(default="host-1", pattern=r"^[a-z][a-z0-9-]{0,30}$")
    host_admin_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    ledger_dsn: str = "postgresql://postgres@127.0.0.1:5432/pgplane_agent"
    pgbouncer_dir: Path = Path(".pgplane/pgbouncer")
    pgbouncer_admin_password: SecretStr | None = None
    pgbouncer_port: int = 6432
    pgbouncer_public_host: str = "127.0.0.1"
    host_pg_host: str = "127.0.0.1"
    host_pg_port: int = 5432
    host_public_key: str = Field(default="", description="X25519 key commands to this host are sealed to.")
    host_private_key: SecretStr | None = None
    tenant_connection_limit: int = 20
    agent_concurrency: int = 8

    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    admin_token: SecretStr | None = None
    secret_key: SecretStr | None = Field(
        default=None, description="Base64 32-byte key that encrypts tenant passwords at rest."
    )
    databases_per_project: int = 10
    idempotency_ttl_hours: int = Field(default=24, ge=24)

    # tests only: the crash point at which the process kills itself, the step that fails
    crash_at: str | None = None
    fail_at: str | None = None
