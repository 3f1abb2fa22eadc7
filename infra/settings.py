"""All configuration, read from environment variables prefixed ``PGPLANE_``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.backup_crypto import BackupKeys
from infra.object_store import S3Options


class Settings(BaseSettings):
    """One settings class for every process; each process reads the fields it needs."""

    model_config = SettingsConfigDict(env_prefix="PGPLANE_", extra="ignore")

    state_dir: Path = Path(".pgplane")

    # message bus
    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = Field(default=None, description="This process's NATS user (see infra.bus_permissions).")
    nats_password: SecretStr | None = None
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
    command_signing_key: SecretStr | None = Field(
        default=None, description="'kid:<base64 Ed25519 seed>': how the API and the scheduler sign commands."
    )
    command_verify_keys: str = Field(
        default="", description="'kid:<base64 Ed25519 public key>,...': signatures an agent accepts."
    )
    host_private_key: SecretStr | None = None
    host_max_databases: int = Field(
        default=1000,
        ge=1,
        description="Databases a data host admits; size it so that one idle session per database plus one"
        " database at its connection limit fit in PostgreSQL's max_connections.",
    )
    state_report_seconds: float = Field(
        default=60.0, gt=0, description="How often the agent reports what its host holds (for the reconciler)."
    )
    reconcile_seconds: float = Field(
        default=5.0, gt=0, description="How often the reconciler looks for new host reports to compare."
    )
    agent_concurrency: int = 8
    agent_warm_databases: int = Field(
        default=2,
        ge=0,
        description="Empty databases the agent keeps made ahead, so that a create renames one instead of"
        " copying the template (0: every create makes its own).",
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="Processes log JSON lines (with operation_id); `pgplane dev` logs text."
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Agent, projector, scheduler, webhooks: serve Prometheus metrics here.",
    )
    metrics_host: str = "127.0.0.1"
    trace_exporter: str = Field(
        default="none",
        pattern=r"^(none|otlp|jsonl:.+)$",
        description="Where spans go: none (off), otlp (OTLP over HTTP to OTEL_EXPORTER_OTLP_ENDPOINT), or"
        " jsonl:<path> (one JSON line per span; each process writes <path> with its name before the suffix).",
    )
    events_keepalive_seconds: float = Field(
        default=15.0, gt=0, description="An idle event stream sends a comment this often, so proxies keep it open."
    )
    events_poll_seconds: float = Field(default=0.5, gt=0, description="How often an event stream looks for news.")

    # webhooks (Standard Webhooks): the dispatcher's schedule and what endpoints may be
    webhook_retry_schedule: str = Field(
        default="0,5,300,1800,7200,18000,36000,50400,72000,86400",
        pattern=r"^\d+(\.\d+)?(,\d+(\.\d+)?)*$",
        description="Seconds before each attempt after a failure (the specification's schedule); jittered by 10%.",
    )
    webhook_timeout_seconds: float = Field(default=15.0, gt=0)
    webhook_max_response_bytes: int = Field(default=65536, ge=0, description="How much of a response is read.")
    webhook_disable_after_seconds: float = Field(
        default=5 * 86400, gt=0, description="An endpoint failing this long without a success is disabled."
    )
    webhook_secret_overlap_seconds: float = Field(
        default=86400, ge=0, description="After a rotation, deliveries carry the old secret's signature this long."
    )
    webhook_allow_loopback: bool = Field(
        default=False, description="Let endpoints point at this machine (the local stack sets it)."
    )
    webhook_allow_http: bool = Field(default=False, description="Accept http:// endpoints (the local stack sets it).")
    webhook_poll_seconds: float = Field(default=0.5, gt=0, description="How often the dispatcher looks for work.")

    # backups: the object store (file:///dir or s3://bucket/prefix) and the keys that seal them
    object_store_url: str = Field(default="", description="Default: file://<state_dir>/backups.")
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    backup_keys: SecretStr | None = Field(
        default=None, description="'kid:<base64 32 bytes>,...'; the last (or backup_key_id) seals new backups."
    )
    backup_key_id: str | None = None
    agent_work_dir: Path = Path(".pgplane/agent-work")
    backup_compression_level: int | None = Field(
        default=None,
        ge=0,
        le=9,
        description="zlib level of backups and base backups: 0 (none, fastest) to 9 (smallest); unset: zlib's default.",
    )
    backup_deadline_seconds: float = Field(default=6 * 3600, gt=0, description="A backup or restore step's limit.")

    # point-in-time restore: WAL archived by PostgreSQL into the spool, uploaded by the agent
    wal_spool_dir: Path | None = Field(default=None, description="Where basic_archive puts WAL; unset: no PITR.")
    base_backup_interval_seconds: float = Field(default=24 * 3600, gt=0)
    wal_retention_days: int = Field(default=30, ge=1, description="Longest restore window any plan has.")
    wal_lag_alert_seconds: float = Field(default=300, gt=0, description="Spooled WAL older than this is lagging.")

    # backup scheduler
    scheduler_interval_seconds: float = Field(default=30.0, gt=0)
    backup_missed_after_seconds: int = Field(
        default=3600, ge=1, description="A slot with no completed backup this long after it is reported missed."
    )

    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_keep_alive_seconds: int = Field(
        default=75,
        ge=1,
        description="An idle client connection stays open this long; keep it above a load balancer's idle timeout.",
    )
    admin_token: SecretStr | None = None
    secret_key: SecretStr | None = Field(
        default=None, description="Base64 32-byte key that encrypts tenant passwords at rest."
    )
    max_body_bytes: int = Field(default=2**20, ge=1024, description="Larger request bodies are refused (413).")
    auth_failures_per_minute: int = Field(
        default=10, ge=1, description="Wrong tokens one client address may present per minute before a 429."
    )
    idempotency_ttl_hours: int = Field(default=24, ge=24)

    # accounts: sign-in, invitations, the CLI's device flow (RFC 8628)
    public_url: str = Field(
        default="",
        description="Where users reach the API (links in mail, the device page); default: http://<api_host>:<api_port>.",
    )
    signup: bool = Field(default=True, description="Anyone may create an account (off: only by invitation).")
    session_hours: int = Field(default=14 * 24, ge=1, description="How long a browser stays signed in.")
    invitation_days: int = Field(default=7, ge=1)
    device_code_seconds: int = Field(default=900, ge=10, description="How long a device code may be approved.")
    device_poll_seconds: int = Field(default=5, ge=1, description="The shortest polling interval a client is given.")
    device_clients: str = Field(default="pgplane-cli", description="Comma-separated public clients of the device flow.")
    oidc_issuer: str = Field(
        default="", description="Sign-in through this OpenID Connect provider (its issuer URL); empty: none."
    )
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr | None = Field(default=None, description="Unset: a public client (PKCE only).")
    oidc_name: str = Field(default="your identity provider", description="What the sign-in link calls it.")

    # billing through Stripe: off until a secret key is set
    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = Field(default=None, description="whsec_…: verifies Stripe's events.")
    stripe_api_base: str = Field(default="", description="Another Stripe-compatible endpoint (tests); empty: Stripe.")
    stripe_price_pro: str = Field(default="", description="The Stripe price of the pro plan (price_…).")
    billing_grace_days: int = Field(default=7, ge=0, description="How long a failed payment keeps the plan.")
    stripe_meter_event: str = Field(default="pgplane_database_minutes", description="The Stripe meter's event name.")
    usage_report_seconds: float = Field(default=300, gt=0, description="How often finished hours are reported.")

    def base_url(self) -> str:
        return (self.public_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")

    def store_url(self) -> str:
        return self.object_store_url or (self.state_dir.resolve() / "backups").as_uri()

    def s3_options(self) -> S3Options:
        secret = self.s3_secret_access_key
        return S3Options(
            endpoint_url=self.s3_endpoint_url,
            region=self.s3_region,
            access_key_id=self.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
        )

    def keys(self) -> BackupKeys:
        if self.backup_keys is None:
            raise SystemExit("PGPLANE_BACKUP_KEYS is required")
        return BackupKeys.parse(self.backup_keys.get_secret_value(), self.backup_key_id)

    # plans: each entitlement per plan (``infra.plans``), PGPLANE_<ENTITLEMENT>_<PLAN>
    databases_per_project_free: int = Field(default=10, ge=0)
    databases_per_project_pro: int = Field(default=100, ge=0)
    backup_max_bytes_free: int = Field(default=10 * 2**30, ge=1)
    backup_max_bytes_pro: int = Field(default=100 * 2**30, ge=1)
    pitr_window_days_free: int = Field(default=7, ge=1)
    pitr_window_days_pro: int = Field(default=30, ge=1)
    backup_retention_days_free: int = Field(default=7, ge=1, description="A deleted database's backups stay...")
    backup_retention_days_pro: int = Field(default=30, ge=1, description="...this long, by plan.")
    requests_per_minute_free: int = Field(default=60, ge=1)
    requests_per_minute_pro: int = Field(default=600, ge=1)
    connections_per_database_free: int = Field(default=20, ge=1, le=1000)
    connections_per_database_pro: int = Field(default=100, ge=1, le=1000)
    backup_min_interval_seconds_free: int = Field(default=3600, ge=1, description="Shortest backup schedule.")
    backup_min_interval_seconds_pro: int = Field(default=3600, ge=1)
