"""Request and response bodies of the public API."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from schemas.public_events import EventType

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
RESERVED_NAMES = frozenset(
    {"postgres", "template0", "template1", "pgbouncer", "pgplane", "admin", "root", "public", "default", "system"}
)
RESERVED_PREFIXES = ("pg_", "db_", "u_", "rs_", "ro_")


def _not_reserved(name: str) -> str:
    if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
        raise ValueError(f"{name!r} is reserved")
    return name


DatabaseName = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        description="Lowercase letter first, then a-z 0-9 _ -, at most 63; reserved names and prefixes refused.",
        json_schema_extra={
            "not": {"anyOf": [{"enum": sorted(RESERVED_NAMES)}, {"pattern": f"^({'|'.join(RESERVED_PREFIXES)})"}]}
        },
    ),
    AfterValidator(_not_reserved),
]


class Strict(BaseModel):
    """A request body: unknown fields are refused, and so are values of another JSON type."""

    model_config = ConfigDict(extra="forbid")


Text = Annotated[
    str,
    Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$", description="No control characters."),
]
RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"


def _rfc3339(value: object) -> object:
    if not isinstance(value, str) or not re.match(RFC3339, value):
        raise ValueError("must be an RFC 3339 date and time with a time zone, like 2026-11-25T10:42:07Z")
    return value


Moment = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339),
    Field(description="RFC 3339, with a time zone.", json_schema_extra={"pattern": RFC3339}),
]


def _whole_number(value: object) -> object:
    # JSON has one number type: 30 and 30.0 are the same integer to JSON Schema, "30" and true are not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be a whole number")
    return value


# The bounds sit next to the int, before the validator, so the OpenAPI document states them as
# minimum and maximum.
Days = Annotated[int, Field(ge=1, le=3650), BeforeValidator(_whole_number)]
KeepLast = Annotated[int, Field(ge=0, le=1000), BeforeValidator(_whole_number)]


PlanName = Annotated[str, Field(pattern=r"^(free|pro)$", description="What the project is entitled to.")]


class ProjectCreate(Strict):
    name: Text
    plan: PlanName = "free"
    organization_id: uuid.UUID | None = Field(
        default=None, description="The organisation that owns it (a user's project needs one; its admins create it)."
    )


class Suspension(Strict):
    reason: Text = "suspended by the platform"


class PlanChange(Strict):
    plan: PlanName


class ProjectPublic(BaseModel):
    id: uuid.UUID
    name: str
    plan: str
    organization_id: uuid.UUID | None = Field(
        default=None, description="Null: made by an operator, in no organization."
    )
    created_at: datetime


class Usage(BaseModel):
    since: datetime = Field(description="The start of the period (default: this month's first day, UTC).")
    databases: int = Field(description="Databases held now.")
    storage_bytes: int = Field(description="Their size on their data hosts, from the hosts' latest state reports.")
    reported_at: datetime | None = Field(description="The oldest host report that size comes from.")
    database_hours: float = Field(description="Hours each database existed within the period, summed.")


class ProjectUsage(Usage):
    project_id: uuid.UUID


class OrganizationUsage(Usage):
    organization_id: uuid.UUID
    projects: int = Field(description="Its live projects.")


class ProjectsPublic(BaseModel):
    data: list[ProjectPublic]
    count: int


class TokenCreate(Strict):
    name: Text
    expires_in_days: Days | None = Field(
        default=None, description="The token stops working after this many days; null: never."
    )
    scopes: list[Literal["read", "write", "admin"]] = Field(
        default=["read", "write"],
        min_length=1,
        max_length=3,
        description="read: see the project; write: also change its databases, backups and restores;"
        " admin: also manage its webhooks.",
    )

    @field_validator("scopes")
    @classmethod
    def _distinct(cls, scopes: list[str]) -> list[str]:
        if len(set(scopes)) != len(scopes):
            raise ValueError("each scope once")
        return scopes


class TokenPublic(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID | None = Field(description="A project token's project; null for a personal token.")
    name: str
    scopes: list[str] = Field(description="What the token may do: read, write (change), admin (webhooks).")
    created_at: datetime
    last_used_at: datetime | None = Field(description="Recorded at most once a minute.")
    expires_at: datetime | None
    revoked_at: datetime | None


class TokensPublic(BaseModel):
    data: list[TokenPublic]
    count: int


class TokenCreated(TokenPublic):
    token: str = Field(description="The secret, shown once: pgp_<id>_<secret>_<checksum>.")


class DatabaseCreate(Strict):
    project_id: uuid.UUID
    name: DatabaseName


class DatabasePublic(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    status: str
    host: str
    port: int
    dbname: str
    user: str
    last_operation_id: uuid.UUID
    last_verified_backup_id: uuid.UUID | None = Field(description="The backup of the last passed restore drill.")
    last_verified_restore_at: datetime | None = Field(description="When a restore drill last passed.")
    created_at: datetime
    updated_at: datetime


class DatabasesPublic(BaseModel):
    data: list[DatabasePublic]
    count: int


class Credentials(BaseModel):
    uri: str
    host: str
    port: int
    dbname: str
    user: str
    password: str


class StepPublic(BaseModel):
    name: str
    status: str
    detail: str | None


class OperationPublic(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    database_id: uuid.UUID
    kind: str
    status: str
    backup_id: uuid.UUID | None
    point_in_time: datetime | None
    error: str | None = Field(description="What went wrong, in product terms.")
    error_detail: str | None = Field(
        default=None, description="For the admin token only: addresses, physical names, the tools' own words."
    )
    steps: list[StepPublic]
    created_at: datetime
    updated_at: datetime


class Accepted(BaseModel):
    operation: OperationPublic
    database: DatabasePublic


class DeleteAccepted(Accepted):
    backups_kept_until: datetime = Field(
        description="Until when the database's backups can still be restored (into a new database); then they go."
    )


class BackupPublic(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    database_id: uuid.UUID
    status: str = Field(description="pending, running, completed, failed, deleting or deleted.")
    trigger: str = Field(description="api or schedule.")
    operation_id: uuid.UUID
    size_bytes: int | None = Field(description="Stored (compressed, encrypted) size.")
    dump_bytes: int | None = Field(description="Size of the pg_dump output before encryption.")
    sha256: str | None = Field(description="SHA-256 of the stored object, checked before every restore.")
    key_id: str | None = Field(description="Which backup key sealed it.")
    duration_ms: int | None
    error: str | None
    last_verified_at: datetime | None = Field(description="When a restore drill of this backup last passed.")
    verify_duration_ms: int | None
    verified_tables: int | None
    created_at: datetime
    completed_at: datetime | None


class BackupsPublic(BaseModel):
    data: list[BackupPublic]
    count: int


class BackupAccepted(BaseModel):
    operation: OperationPublic
    backup: BackupPublic


class RestoreInPlace(Strict):
    """Over the database itself: same name and credentials."""

    target: Literal["in_place"]


class RestoreToNewDatabase(Strict):
    """Into a new database of the same project, with its own credentials."""

    target: Literal["new_database"]
    name: DatabaseName


RestoreRequest = Annotated[RestoreInPlace | RestoreToNewDatabase, Field(discriminator="target")]
"""Restore a backup over its database or into a new one."""


class PointInTime(Strict):
    point_in_time: Moment


class PointInTimeInPlace(PointInTime, RestoreInPlace):
    pass


class PointInTimeToNewDatabase(PointInTime, RestoreToNewDatabase):
    pass


PointInTimeRestoreRequest = Annotated[PointInTimeInPlace | PointInTimeToNewDatabase, Field(discriminator="target")]


class RestoreWindowPublic(BaseModel):
    database_id: uuid.UUID
    earliest: datetime | None = Field(description="null until a base backup and its WAL are archived.")
    latest: datetime | None
    last_archived_segment: str | None
    last_archived_at: datetime | None
    archive_lag_seconds: int | None = Field(description="Seconds since the host last archived a WAL segment.")
    base_backups: int
    host_up: bool = Field(
        description="The data host answers and archived WAL lately: any moment up to now is restorable (a"
        " restore archives the WAL written since the last archived segment first). Otherwise latest is the end"
        " of the archived WAL and archive_lag_seconds is the recovery point."
    )


class BackupPolicyUpdate(Strict):
    schedule: Annotated[str, Field(max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")] | None = Field(
        description="'daily' (00:00 UTC), a cron expression in UTC, or null for off."
    )
    retain_days: Days = Field(default=7, description="Backups older than this are deleted...")
    keep_last: KeepLast = Field(default=7, description="...except the newest keep_last completed ones.")


class BackupPolicyPublic(BaseModel):
    database_id: uuid.UUID
    schedule: str | None
    retain_days: int
    keep_last: int
    updated_at: datetime


class AuditEntryPublic(BaseModel):
    id: uuid.UUID
    occurred_at: datetime
    actor: str
    action: str
    resource_type: str
    resource_id: uuid.UUID
    operation_id: uuid.UUID | None
    outcome: str
    detail: dict[str, Any]


class AuditLogPublic(BaseModel):
    data: list[AuditEntryPublic]
    count: int


class ComponentReadiness(BaseModel):
    ok: bool
    detail: str = Field(description="What was found: an error, a heartbeat's age, a lag.")


class Readiness(BaseModel):
    ready: bool = Field(description="Every component is ok; the status is 503 otherwise.")
    components: dict[str, ComponentReadiness] = Field(
        description="nats, metadata, projector and one agent:<host> per data host."
    )


WebhookUrl = Annotated[
    str,
    Field(
        min_length=8,
        max_length=2000,
        pattern=r"^https?://[^\s]+$",
        description="https; its name must resolve only to public addresses (http and loopback only where allowed).",
    ),
]


class WebhookCreate(Strict):
    project_id: uuid.UUID
    url: WebhookUrl
    event_types: list[EventType] = Field(
        default_factory=list, max_length=50, description="Only these types (see `GET /events/schemas`); empty: all."
    )
    description: Text | None = None


class WebhookUpdate(Strict):
    url: WebhookUrl | None = None
    event_types: list[EventType] | None = Field(default=None, max_length=50)
    description: Text | None = None
    status: Literal["enabled", "disabled"] | None = None


class WebhookPublic(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    url: str
    event_types: list[str]
    description: str | None
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


class WebhooksPublic(BaseModel):
    data: list[WebhookPublic]
    count: int


class WebhookWithSecret(WebhookPublic):
    secret: str = Field(description="`whsec_…`: verify deliveries with it (Standard Webhooks).")


class DeliveryAttemptPublic(BaseModel):
    event_id: uuid.UUID
    attempted_at: datetime
    status_code: int | None
    duration_ms: int
    error: str | None
    next_attempt_at: datetime | None = Field(description="When it is tried again; null: delivered or given up.")


class DeliveryAttemptsPublic(BaseModel):
    data: list[DeliveryAttemptPublic]
    count: int


class WebhookReplay(Strict):
    """One event again (``event_id``), or every event of the endpoint's types after the project's
    event number ``after``, or from ``since`` (to ``until``)."""

    event_id: uuid.UUID | None = None
    after: int | None = Field(default=None, ge=0, le=2**63 - 1)
    since: Moment | None = None
    until: Moment | None = None


class WebhookReplayed(BaseModel):
    queued: int = Field(description="Deliveries queued; each goes out again under its event's webhook-id.")


class WebhookTestSent(BaseModel):
    event_id: uuid.UUID
    status_code: int | None
    duration_ms: int
    error: str | None


# --- accounts: users, sessions, organisations, members, invitations -------------------------

Role = Literal["viewer", "developer", "admin", "owner"]
Email = Annotated[
    # Control characters are refused, the C1 ones (U+0080-U+009F) by name: U+0085 is whitespace
    # to our validator but not to a client's ECMAScript regex, so the documented pattern must not
    # rely on \s for it.
    str,
    Field(
        min_length=3,
        max_length=254,
        pattern=r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+\.[^@\s\x00-\x1f\x7f-\x9f]+$",
        description="An email address; compared without regard to case.",
    ),
    AfterValidator(str.lower),
]
Password = Annotated[str, Field(min_length=10, max_length=256, description="At least 10 characters.")]


class SignUp(Strict):
    email: Email
    password: Password
    name: Text


class SignIn(Strict):
    email: Email
    password: Annotated[str, Field(min_length=1, max_length=256)]


class UserPublic(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    platform_admin: bool
    created_at: datetime


class SessionPublic(BaseModel):
    user: UserPublic
    csrf_token: str = Field(description="Send it as X-CSRF-Token with every write made with the session cookie.")
    expires_at: datetime


class OrganizationCreate(Strict):
    name: Text


class OrganizationPublic(BaseModel):
    id: uuid.UUID
    name: str
    plan: str = Field(description="What every project it owns is entitled to.")
    suspended_at: datetime | None = Field(default=None, description="Set: its databases refuse logins.")
    suspended_reason: str | None = None
    role: str | None = Field(description="The caller's role in it (null for the platform admin).")
    created_at: datetime


class OrganizationsPublic(BaseModel):
    data: list[OrganizationPublic]
    count: int


class Me(BaseModel):
    user: UserPublic
    organizations: list[OrganizationPublic]


class MemberPublic(BaseModel):
    user_id: uuid.UUID
    email: str
    name: str
    role: str
    created_at: datetime


class MembersPublic(BaseModel):
    data: list[MemberPublic]
    count: int


class MemberUpdate(Strict):
    role: Role


class InvitationCreate(Strict):
    email: Email
    role: Role = "developer"


class InvitationPublic(BaseModel):
    id: uuid.UUID
    organization_id: uuid.UUID
    email: str
    role: str
    status: Literal["pending", "accepted", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime


class InvitationsPublic(BaseModel):
    data: list[InvitationPublic]
    count: int


class InvitationAccept(Strict):
    token: Annotated[str, Field(min_length=1, max_length=200, description="From the invitation's link.")]


class MailPublic(BaseModel):
    id: uuid.UUID
    recipient: str
    subject: str
    body: str
    created_at: datetime


class MailboxPublic(BaseModel):
    data: list[MailPublic]
    count: int


class OrganizationSummary(BaseModel):
    id: uuid.UUID
    name: str
    plan: str
    created_at: datetime
    members: int
    projects: int


class OrganizationSummaries(BaseModel):
    data: list[OrganizationSummary]
    count: int


class UsersPublic(BaseModel):
    data: list[UserPublic]
    count: int


class BillingPublic(BaseModel):
    organization_id: uuid.UUID
    plan: str
    status: str = Field(description="none, active, past_due (paying late: grace_until), canceled.")
    grace_until: datetime | None = Field(description="A late payment keeps the plan until then.")
    customer: str | None = Field(description="The Stripe customer.")
    subscription: str | None = Field(description="The Stripe subscription.")


class BillingSession(BaseModel):
    url: str = Field(description="Where to send the person: Stripe's checkout or customer portal page.")


class StripeReceipt(BaseModel):
    received: bool = True
    acted: bool = Field(description="False for a duplicate, or an event type pgplane does not act on.")
