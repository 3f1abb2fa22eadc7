"""Organisations, their members and invitations.

Whoever creates an organisation owns it. Admins manage members and invitations, but only an owner
makes, changes or removes an owner, and the last owner stays (409). An invitation is mail (a row
of the mail outbox, in the same transaction) with a single-use link that expires; it is accepted
by a signed-in user with the invited address. Every change is an event, and so an audit entry
filed under the organisation.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from api.errors import ApiError, not_found
from api.models import (
    InvitationCreate,
    InvitationPublic,
    InvitationsPublic,
    MemberPublic,
    MembersPublic,
    OrganizationPublic,
    OrganizationsPublic,
    OrganizationUsage,
)
from api.platform import Platform
from api.principal import Principal
from api.usecases.accounts import check_user
from api.usecases.projects import measure
from infra.metadata.tables import INVITATIONS, MAIL, MEMBERSHIPS, ORGANIZATIONS, USERS
from infra.secrets import token_digest
from producers import suspensions
from producers.commands import project_event
from readmodel.tables import PROJECTS
from schemas.envelope import Payload
from schemas.events import (
    InvitationRevoked,
    MemberAdded,
    MemberInvited,
    MemberRemoved,
    MemberRoleChanged,
    OrganizationCreated,
    OrganizationPlanChanged,
)


async def _record(
    conn: AsyncConnection, platform: Platform, principal: Principal, organization_id: uuid.UUID, event: Payload
) -> None:
    """The change's event (and so its audit entry), filed under the organisation."""
    await platform.outbox.event(conn, project_event(event, project_id=organization_id, actor=principal.actor))


async def create_organization(
    conn: AsyncConnection, platform: Platform, principal: Principal, name: str
) -> OrganizationPublic:
    user_id = check_user(principal)
    organization_id, now = uuid.uuid4(), datetime.now(UTC)
    await conn.execute(sa.insert(ORGANIZATIONS).values(id=organization_id, name=name, created_at=now))
    await conn.execute(
        sa.insert(MEMBERSHIPS).values(organization_id=organization_id, user_id=user_id, role="owner", created_at=now)
    )
    await _record(conn, platform, principal, organization_id, OrganizationCreated(name=name, owner=user_id))
    return OrganizationPublic(id=organization_id, name=name, plan="free", role="owner", created_at=now)


async def change_plan(
    conn: AsyncConnection, platform: Platform, principal: Principal, organization_id: uuid.UUID, plan: str
) -> OrganizationPublic:
    """Move the organization (every project it owns) to ``plan`` now. A downgrade over a limit
    deletes nothing: new creations are refused (409) until it is back under."""
    query = sa.select(ORGANIZATIONS).where(ORGANIZATIONS.c.id == organization_id)
    row = (await conn.execute(query.with_for_update())).first()
    if row is None:
        raise not_found("organization")
    if row.plan != plan:
        await conn.execute(sa.update(ORGANIZATIONS).where(ORGANIZATIONS.c.id == organization_id).values(plan=plan))
        changed = OrganizationPlanChanged(plan=plan, previous=row.plan)
        await _record(conn, platform, principal, organization_id, changed)
        row = (await conn.execute(query)).one()
    return _organization(principal, row)


async def set_suspended(
    conn: AsyncConnection,
    platform: Platform,
    principal: Principal,
    organization_id: uuid.UUID,
    *,
    reason: str | None,
) -> OrganizationPublic:
    """Suspend (``reason``) or resume the organization: its databases follow, each an operation."""
    query = sa.select(ORGANIZATIONS).where(ORGANIZATIONS.c.id == organization_id)
    if (await conn.execute(query.with_for_update())).first() is None:
        raise not_found("organization")
    if reason is not None:
        await suspensions.suspend(conn, platform.outbox, organization_id, reason, actor=principal.actor)
    else:
        await suspensions.resume(conn, platform.outbox, organization_id, actor=principal.actor)
    await suspensions.converge(conn, platform.outbox, actor=principal.actor, organization_id=organization_id)
    return _organization(principal, (await conn.execute(query)).one())


async def list_organizations(conn: AsyncConnection, principal: Principal) -> OrganizationsPublic:
    query = sa.select(ORGANIZATIONS).order_by(ORGANIZATIONS.c.created_at)
    if not principal.is_admin:
        query = query.where(ORGANIZATIONS.c.id.in_(principal.memberships))
    rows = (await conn.execute(query)).all()
    data = [_organization(principal, row) for row in rows]
    return OrganizationsPublic(data=data, count=len(data))


async def read_organization(
    conn: AsyncConnection, principal: Principal, organization_id: uuid.UUID
) -> OrganizationPublic:
    principal.check_role(organization_id, "viewer")
    row = (await conn.execute(sa.select(ORGANIZATIONS).where(ORGANIZATIONS.c.id == organization_id))).first()
    if row is None:
        raise not_found("organization")
    return _organization(principal, row)


def _organization(principal: Principal, row: Any) -> OrganizationPublic:
    role = principal.memberships.get(row.id)
    return OrganizationPublic(
        id=row.id,
        name=row.name,
        plan=row.plan,
        suspended_at=row.suspended_at,
        suspended_reason=row.suspended_reason,
        role=role,
        created_at=row.created_at,
    )


async def list_members(conn: AsyncConnection, principal: Principal, organization_id: uuid.UUID) -> MembersPublic:
    await read_organization(conn, principal, organization_id)
    rows = (
        await conn.execute(
            sa.select(MEMBERSHIPS.c.user_id, MEMBERSHIPS.c.role, MEMBERSHIPS.c.created_at, USERS.c.email, USERS.c.name)
            .join(USERS, USERS.c.id == MEMBERSHIPS.c.user_id)
            .where(MEMBERSHIPS.c.organization_id == organization_id)
            .order_by(MEMBERSHIPS.c.created_at)
        )
    ).all()
    data = [MemberPublic.model_validate(dict(row._mapping)) for row in rows]
    return MembersPublic(data=data, count=len(data))


async def _member(conn: AsyncConnection, organization_id: uuid.UUID, user_id: uuid.UUID) -> Any:
    row = (
        await conn.execute(
            sa.select(MEMBERSHIPS.c.user_id, MEMBERSHIPS.c.role, MEMBERSHIPS.c.created_at, USERS.c.email, USERS.c.name)
            .join(USERS, USERS.c.id == MEMBERSHIPS.c.user_id)
            .where(MEMBERSHIPS.c.organization_id == organization_id, MEMBERSHIPS.c.user_id == user_id)
            .with_for_update(of=MEMBERSHIPS)
        )
    ).first()
    if row is None:
        raise not_found("member")
    return row


async def _check_owners_stay(conn: AsyncConnection, organization_id: uuid.UUID, member: Any) -> None:
    if member.role != "owner":
        return
    owners = (
        await conn.execute(
            sa.select(MEMBERSHIPS.c.user_id)
            .where(MEMBERSHIPS.c.organization_id == organization_id, MEMBERSHIPS.c.role == "owner")
            .with_for_update()
        )
    ).all()
    if len(owners) <= 1:
        raise ApiError(409, "last_owner", "an organization keeps at least one owner: make another member owner first")


def _check_may_assign(held: str, *roles: str) -> None:
    if "owner" in roles and held != "owner":
        raise ApiError(403, "insufficient_role", "only an owner makes, changes or removes an owner")


async def change_role(
    conn: AsyncConnection,
    platform: Platform,
    principal: Principal,
    organization_id: uuid.UUID,
    user_id: uuid.UUID,
    role: str,
) -> MemberPublic:
    held = principal.check_role(organization_id, "admin")
    member = await _member(conn, organization_id, user_id)
    if member.role != role:
        _check_may_assign(held, member.role, role)
        await _check_owners_stay(conn, organization_id, member)
        await conn.execute(
            sa.update(MEMBERSHIPS)
            .where(MEMBERSHIPS.c.organization_id == organization_id, MEMBERSHIPS.c.user_id == user_id)
            .values(role=role)
        )
        changed = MemberRoleChanged(user_id=user_id, role=role, previous=member.role)
        await _record(conn, platform, principal, organization_id, changed)
    return MemberPublic.model_validate(dict(member._mapping) | {"role": role})


async def remove_member(
    conn: AsyncConnection, platform: Platform, principal: Principal, organization_id: uuid.UUID, user_id: uuid.UUID
) -> MemberPublic:
    """An admin removes a member; anyone may leave (but the last owner)."""
    leaving = principal.user_id == user_id
    held = principal.check_role(organization_id, "viewer" if leaving else "admin")
    member = await _member(conn, organization_id, user_id)
    if not leaving:
        _check_may_assign(held, member.role)
    await _check_owners_stay(conn, organization_id, member)
    await conn.execute(
        sa.delete(MEMBERSHIPS).where(MEMBERSHIPS.c.organization_id == organization_id, MEMBERSHIPS.c.user_id == user_id)
    )
    await _record(conn, platform, principal, organization_id, MemberRemoved(user_id=user_id, role=member.role))
    return MemberPublic.model_validate(dict(member._mapping))


# --- invitations ----------------------------------------------------------------------------


def _invitation(row: Any, now: datetime | None = None) -> InvitationPublic:
    now = now or datetime.now(UTC)
    if row.accepted_at is not None:
        status = "accepted"
    elif row.revoked_at is not None:
        status = "revoked"
    elif row.expires_at <= now:
        status = "expired"
    else:
        status = "pending"
    return InvitationPublic(
        id=row.id,
        organization_id=row.organization_id,
        email=row.email,
        role=row.role,
        status=status,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


async def invite(
    conn: AsyncConnection,
    platform: Platform,
    principal: Principal,
    organization_id: uuid.UUID,
    request: InvitationCreate,
) -> InvitationPublic:
    held = principal.check_role(organization_id, "admin")
    _check_may_assign(held, request.role)
    organization = (await conn.execute(sa.select(ORGANIZATIONS).where(ORGANIZATIONS.c.id == organization_id))).first()
    if organization is None:
        raise not_found("organization")
    invitation_id, now = uuid.uuid4(), datetime.now(UTC)
    secret = secrets.token_urlsafe(32)
    values = {
        "id": invitation_id,
        "organization_id": organization_id,
        "email": request.email,
        "role": request.role,
        "secret_digest": token_digest(secret),
        "invited_by": principal.user_id,
        "created_at": now,
        "expires_at": now + timedelta(days=platform.settings.invitation_days),
    }
    await conn.execute(sa.insert(INVITATIONS).values(values))
    token = f"{invitation_id.hex}.{secret}"
    body = (
        f"You are invited to join {organization.name} on pgplane as {request.role}.\n\n"
        f"Sign in (or sign up) at {platform.settings.base_url()} with this address, then accept:\n"
        f'POST /api/v1/invitations/accept {{"token": "{token}"}}\n\n'
        f"The invitation works once, until {values['expires_at']:%Y-%m-%d %H:%M} UTC.\n"
    )
    await conn.execute(
        sa.insert(MAIL).values(
            id=uuid.uuid4(),
            recipient=request.email,
            subject=f"Join {organization.name} on pgplane",
            body_encrypted=platform.box.encrypt(body, context=f"mail:{request.email}"),
            created_at=now,
        )
    )
    invited = MemberInvited(invitation_id=invitation_id, email=request.email, role=request.role)
    await _record(conn, platform, principal, organization_id, invited)
    return _invitation((await conn.execute(sa.select(INVITATIONS).where(INVITATIONS.c.id == invitation_id))).one())


async def list_invitations(
    conn: AsyncConnection, principal: Principal, organization_id: uuid.UUID
) -> InvitationsPublic:
    principal.check_role(organization_id, "admin")
    await read_organization(conn, principal, organization_id)
    rows = (
        await conn.execute(
            sa.select(INVITATIONS)
            .where(INVITATIONS.c.organization_id == organization_id)
            .order_by(INVITATIONS.c.created_at)
        )
    ).all()
    data = [_invitation(row) for row in rows]
    return InvitationsPublic(data=data, count=len(data))


async def revoke_invitation(
    conn: AsyncConnection,
    platform: Platform,
    principal: Principal,
    organization_id: uuid.UUID,
    invitation_id: uuid.UUID,
) -> InvitationPublic:
    principal.check_role(organization_id, "admin")
    query = sa.select(INVITATIONS).where(
        INVITATIONS.c.id == invitation_id, INVITATIONS.c.organization_id == organization_id
    )
    row = (await conn.execute(query.with_for_update())).first()
    if row is None:
        raise not_found("invitation")
    if row.accepted_at is None and row.revoked_at is None:
        await conn.execute(
            sa.update(INVITATIONS).where(INVITATIONS.c.id == invitation_id).values(revoked_at=datetime.now(UTC))
        )
        revoked = InvitationRevoked(invitation_id=invitation_id, email=row.email)
        await _record(conn, platform, principal, organization_id, revoked)
        row = (await conn.execute(query)).one()
    return _invitation(row)


async def accept(conn: AsyncConnection, platform: Platform, principal: Principal, token: str) -> MemberPublic:
    """Join with the invitation's role: once, before it expires, as the user it was sent to."""
    user_id = check_user(principal)
    invitation_hex, _, secret = token.partition(".")
    try:
        invitation_id = uuid.UUID(hex=invitation_hex)
    except ValueError:
        raise not_found("invitation") from None
    row = (
        await conn.execute(sa.select(INVITATIONS).where(INVITATIONS.c.id == invitation_id).with_for_update())
    ).first()
    if row is None or not secrets.compare_digest(row.secret_digest, token_digest(secret)):
        raise not_found("invitation")
    status = _invitation(row).status
    if status != "pending":
        raise ApiError(409, f"invitation_{status}", f"the invitation is {status}: ask for a new one")
    user = (await conn.execute(sa.select(USERS.c.email).where(USERS.c.id == user_id))).one()
    if user.email != row.email:
        raise ApiError(403, "invitation_for_another_user", "the invitation was sent to another address")
    existing = (
        await conn.execute(
            sa.select(MEMBERSHIPS.c.role).where(
                MEMBERSHIPS.c.organization_id == row.organization_id, MEMBERSHIPS.c.user_id == user_id
            )
        )
    ).first()
    if existing is not None:
        raise ApiError(409, "already_member", f"you are already a member, as {existing.role}")
    now = datetime.now(UTC)
    await conn.execute(
        sa.update(INVITATIONS).where(INVITATIONS.c.id == invitation_id).values(accepted_at=now, accepted_by=user_id)
    )
    await conn.execute(
        sa.insert(MEMBERSHIPS).values(
            organization_id=row.organization_id, user_id=user_id, role=row.role, created_at=now
        )
    )
    added = MemberAdded(user_id=user_id, role=row.role, invitation_id=invitation_id)
    await _record(conn, platform, principal, row.organization_id, added)
    return await _member_public(conn, row.organization_id, user_id)


async def _member_public(conn: AsyncConnection, organization_id: uuid.UUID, user_id: uuid.UUID) -> MemberPublic:
    return MemberPublic.model_validate(dict((await _member(conn, organization_id, user_id))._mapping))


async def usage(
    conn: AsyncConnection, principal: Principal, organization_id: uuid.UUID, since: datetime
) -> OrganizationUsage:
    """What the organization's live projects use, together (what billing reads)."""
    await read_organization(conn, principal, organization_id)
    projects = (
        (
            await conn.execute(
                sa.select(PROJECTS.c.id).where(
                    PROJECTS.c.organization_id == organization_id, PROJECTS.c.deleted_at.is_(None)
                )
            )
        )
        .scalars()
        .all()
    )
    measured = await measure(conn, projects, since)
    return OrganizationUsage(organization_id=organization_id, projects=len(projects), **measured.model_dump())
