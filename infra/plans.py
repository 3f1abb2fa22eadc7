"""Plans and what each entitles a project to: one table (``Entitlements`` by plan), read by every
limit in the product. Each value is a setting, ``PGPLANE_<ENTITLEMENT>_<PLAN>``."""

from __future__ import annotations

from dataclasses import dataclass, fields

from infra.settings import Settings

PLANS = ("free", "pro")


@dataclass(frozen=True)
class Entitlements:
    databases_per_project: int
    backup_max_bytes: int
    pitr_window_days: int
    """How far back a point-in-time restore reaches."""
    backup_retention_days: int
    """How long a deleted database's backups stay restorable."""
    requests_per_minute: int
    """Per token and per project; past it, 429."""
    connections_per_database: int
    backup_min_interval_seconds: int
    """The shortest backup schedule a policy may set."""


def entitlements(settings: Settings, plan: str) -> Entitlements:
    if plan not in PLANS:
        raise ValueError(f"unknown plan {plan!r}")
    return Entitlements(**{f.name: getattr(settings, f"{f.name}_{plan}") for f in fields(Entitlements)})
