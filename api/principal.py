"""Who is calling: the platform's admin, a project token, or a user (signed in, or through a personal
token), and what each may do in each project it sees."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from api.errors import ApiError, not_found

SCOPES = ("read", "write", "admin")
"""What a caller may do in a project, each including the ones before it: read the project; change
its databases, backups and restores; manage its webhooks."""

ROLES = ("viewer", "developer", "admin", "owner")
"""A member's role in an organisation. The first three give a scope in its projects (below); an
admin also manages members, invitations and tokens, and an owner also the owners."""
ROLE_SCOPES = {"viewer": "read", "developer": "write", "admin": "admin", "owner": "admin"}


def up_to(scope: str) -> frozenset[str]:
    """``scope`` and every one it includes."""
    return frozenset(SCOPES[: SCOPES.index(scope) + 1])


@dataclass(frozen=True)
class Principal:
    actor: str
    project_id: uuid.UUID | None = None
    """A project token's project (the default of list routes); ``None`` for users and the admin."""
    grants: Mapping[uuid.UUID, frozenset[str]] | None = None
    """The scopes held in each project the caller sees; ``None``: the platform admin, who sees all."""
    user_id: uuid.UUID | None = None
    needs: str = "read"
    """The scope this request needs in the project it addresses (set per request)."""
    memberships: Mapping[uuid.UUID, str] = field(default_factory=dict)
    """A user's role in each of their organisations."""
    scopes: frozenset[str] = frozenset(SCOPES)
    """What the credential itself allows (a personal token's scopes), whatever the roles."""

    @classmethod
    def admin(cls, actor: str = "admin") -> Principal:
        return cls(actor)

    @classmethod
    def project_token(cls, token_id: uuid.UUID, project_id: uuid.UUID, scopes: frozenset[str]) -> Principal:
        return cls(f"token:{token_id}", project_id, {project_id: scopes}, scopes=scopes)

    @property
    def is_admin(self) -> bool:
        return self.grants is None

    def allows(self, scope: str, project_id: uuid.UUID | None = None) -> bool:
        """Whether the caller holds ``scope`` (or one above it) in ``project_id``, or (``None``)
        whether its credential allows it at all."""
        if self.grants is None:
            return True
        return any(s in self._held(project_id) for s in SCOPES[SCOPES.index(scope) :])

    def _held(self, project_id: uuid.UUID | None) -> frozenset[str]:
        if self.grants is None:
            return frozenset(SCOPES)
        if project_id is not None:
            return self.grants.get(project_id, frozenset())
        return self.scopes

    def check_scope(self, scope: str, project_id: uuid.UUID | None = None) -> None:
        if not self.allows(scope, project_id):
            raise ApiError(
                403,
                "insufficient_scope",
                f"this needs the {scope} scope{' in this project' if project_id else ''}; the caller has"
                f" {', '.join(s for s in SCOPES if s in self._held(project_id)) or 'none'}",
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
            )

    def sees(self, project_id: uuid.UUID) -> bool:
        return self.grants is None or project_id in self.grants

    def admit(self, project_id: uuid.UUID, what: str) -> None:
        """Another tenant's resource is indistinguishable from a missing one (404); one the caller
        sees but may not change this way is a 403."""
        if not self.sees(project_id):
            raise not_found(what)
        self.check_scope(self.needs, project_id)

    def check_project(self, project_id: uuid.UUID) -> None:
        self.admit(project_id, "project")

    def check_role(self, organization_id: uuid.UUID, role: str) -> str:
        """The caller's role in the organisation, at least ``role``: another organisation is not
        found (404); a lower role, or a token without the admin scope for a change, is a 403."""
        if self.is_admin:
            return "owner"
        held = self.memberships.get(organization_id)
        if held is None:
            raise not_found("organization")
        if ROLES.index(held) < ROLES.index(role):
            raise ApiError(403, "insufficient_role", f"this needs the {role} role in the organization; yours is {held}")
        if role in ("admin", "owner") and "admin" not in self.scopes:
            raise ApiError(
                403, "insufficient_scope", "managing an organization needs a credential with the admin scope"
            )
        return held

    def listed(self, project_id: uuid.UUID | None) -> frozenset[uuid.UUID] | None:
        """The projects a list covers: the one asked for, else every one the caller sees (``None``:
        every project, for the platform admin)."""
        if project_id is not None:
            self.check_project(project_id)
            return frozenset({project_id})
        return None if self.grants is None else frozenset(self.grants)
