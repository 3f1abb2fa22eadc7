"""Who is calling: the admin token, or a token scoped to one project."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from api.errors import ApiError, not_found

SCOPES = ("read", "write", "admin")
"""What a project token may do, each including the ones before it: read its project; change its
databases, backups and restores; manage its webhooks."""


@dataclass(frozen=True)
class Principal:
    actor: str
    project_id: uuid.UUID | None  # None: the admin token, which sees every project
    scopes: frozenset[str] = frozenset(SCOPES)

    def allows(self, scope: str) -> bool:
        """Whether the caller holds ``scope`` or one above it."""
        return any(held in self.scopes for held in SCOPES[SCOPES.index(scope) :])

    def check_scope(self, scope: str) -> None:
        if not self.allows(scope):
            held = ", ".join(s for s in SCOPES if s in self.scopes)
            raise ApiError(
                403,
                "insufficient_scope",
                f"this needs a token with the {scope} scope; this one has {held}",
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
            )

    @property
    def is_admin(self) -> bool:
        return self.project_id is None

    def sees(self, project_id: uuid.UUID) -> bool:
        return self.is_admin or project_id == self.project_id

    def check_project(self, project_id: uuid.UUID) -> None:
        """Another tenant's project is indistinguishable from a missing one."""
        if not self.sees(project_id):
            raise not_found("project")
