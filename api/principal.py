"""Who is calling: the admin token, or a token scoped to one project."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from api.errors import not_found


@dataclass(frozen=True)
class Principal:
    actor: str
    project_id: uuid.UUID | None  # None: the admin token, which sees every project

    @property
    def is_admin(self) -> bool:
        return self.project_id is None

    def sees(self, project_id: uuid.UUID) -> bool:
        return self.is_admin or project_id == self.project_id

    def check_project(self, project_id: uuid.UUID) -> None:
        """Another tenant's project is indistinguishable from a missing one."""
        if not self.sees(project_id):
            raise not_found("project")
