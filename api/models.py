"""Request and response bodies of the public API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
RESERVED_NAMES = frozenset(
    {"postgres", "template0", "template1", "pgbouncer", "pgplane", "admin", "root", "public", "default", "system"}
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProjectCreate(Strict):
    name: str = Field(min_length=1, max_length=100)
    plan: str = Field(default="free", pattern=r"^(free|pro)$")


class ProjectPublic(BaseModel):
    id: uuid.UUID
    name: str
    plan: str
    created_at: datetime


class TokenCreate(Strict):
    name: str = Field(min_length=1, max_length=100)


class TokenCreated(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    token: str = Field(description="The secret, shown once.")
    created_at: datetime


class DatabaseCreate(Strict):
    project_id: uuid.UUID
    name: str = Field(pattern=NAME_PATTERN, description="Lowercase letter first, then a-z 0-9 _ -, at most 63.")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_NAMES or name.startswith(("pg_", "db_", "u_")):
            raise ValueError(f"{name!r} is reserved")
        return name


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
    error: str | None
    steps: list[StepPublic]
    created_at: datetime
    updated_at: datetime


class Accepted(BaseModel):
    operation: OperationPublic
    database: DatabasePublic


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
