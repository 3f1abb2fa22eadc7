"""Organizations, their members and invitations. Their audit entries are at
``/audit-log?organization_id=``."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from api.deps import CurrentPrincipal, MutationDep, PlatformDep
from api.errors import errors
from api.models import (
    InvitationAccept,
    InvitationCreate,
    InvitationPublic,
    InvitationsPublic,
    MemberPublic,
    MembersPublic,
    MemberUpdate,
    Moment,
    OrganizationCreate,
    OrganizationPublic,
    OrganizationsPublic,
    OrganizationUsage,
)
from api.usecases import organizations
from api.usecases.projects import month_start

router = APIRouter(tags=["organizations"], responses=errors(401, 403, 422, 429))


@router.post("/orgs", status_code=201, response_model=OrganizationPublic, responses=errors(413, 415))
async def create_organization(
    *, principal: CurrentPrincipal, mutation: MutationDep, body: OrganizationCreate
) -> OrganizationPublic:
    """Create an organization; you are its owner."""
    return await mutation.run(
        lambda conn: organizations.create_organization(conn, mutation.platform, principal, body.name),
        OrganizationPublic,
    )


@router.get("/orgs", response_model=OrganizationsPublic)
async def read_organizations(*, platform: PlatformDep, principal: CurrentPrincipal) -> OrganizationsPublic:
    """The organizations you belong to, with your role in each."""
    async with platform.autocommit.connect() as conn:
        return await organizations.list_organizations(conn, principal)


@router.get("/orgs/{organization_id}", response_model=OrganizationPublic, responses=errors(404))
async def read_organization(
    *, platform: PlatformDep, principal: CurrentPrincipal, organization_id: uuid.UUID
) -> OrganizationPublic:
    async with platform.autocommit.connect() as conn:
        return await organizations.read_organization(conn, principal, organization_id)


@router.get("/orgs/{organization_id}/usage", response_model=OrganizationUsage, responses=errors(404))
async def read_usage(
    *, platform: PlatformDep, principal: CurrentPrincipal, organization_id: uuid.UUID, since: Moment | None = None
) -> OrganizationUsage:
    """What the organization uses: databases, their storage (from the data hosts' latest state
    reports) and database-hours since ``since`` (default: the first day of this month, UTC)."""
    async with platform.autocommit.connect() as conn:
        return await organizations.usage(conn, principal, organization_id, since or month_start())


@router.get("/orgs/{organization_id}/members", response_model=MembersPublic, responses=errors(404))
async def read_members(
    *, platform: PlatformDep, principal: CurrentPrincipal, organization_id: uuid.UUID
) -> MembersPublic:
    async with platform.autocommit.connect() as conn:
        return await organizations.list_members(conn, principal, organization_id)


@router.patch(
    "/orgs/{organization_id}/members/{user_id}", response_model=MemberPublic, responses=errors(404, 409, 413, 415)
)
async def change_role(
    *,
    principal: CurrentPrincipal,
    mutation: MutationDep,
    organization_id: uuid.UUID,
    user_id: uuid.UUID,
    body: MemberUpdate,
) -> MemberPublic:
    """Change a member's role (admins; only an owner touches an owner; the last owner stays, 409)."""
    return await mutation.run(
        lambda conn: organizations.change_role(conn, mutation.platform, principal, organization_id, user_id, body.role),
        MemberPublic,
    )


@router.delete(
    "/orgs/{organization_id}/members/{user_id}", response_model=MemberPublic, responses=errors(404, 409, 413, 415)
)
async def remove_member(
    *, principal: CurrentPrincipal, mutation: MutationDep, organization_id: uuid.UUID, user_id: uuid.UUID
) -> MemberPublic:
    """Remove a member (admins), or leave (anyone but the last owner)."""
    return await mutation.run(
        lambda conn: organizations.remove_member(conn, mutation.platform, principal, organization_id, user_id),
        MemberPublic,
    )


@router.post(
    "/orgs/{organization_id}/invitations",
    status_code=201,
    response_model=InvitationPublic,
    responses=errors(404, 413, 415),
)
async def invite(
    *, principal: CurrentPrincipal, mutation: MutationDep, organization_id: uuid.UUID, body: InvitationCreate
) -> InvitationPublic:
    """Invite an email address with a role (admins): a mail with a single-use link that expires."""
    return await mutation.run(
        lambda conn: organizations.invite(conn, mutation.platform, principal, organization_id, body),
        InvitationPublic,
    )


@router.get("/orgs/{organization_id}/invitations", response_model=InvitationsPublic, responses=errors(404))
async def read_invitations(
    *, platform: PlatformDep, principal: CurrentPrincipal, organization_id: uuid.UUID
) -> InvitationsPublic:
    async with platform.autocommit.connect() as conn:
        return await organizations.list_invitations(conn, principal, organization_id)


@router.delete(
    "/orgs/{organization_id}/invitations/{invitation_id}",
    response_model=InvitationPublic,
    responses=errors(404, 413, 415),
)
async def revoke_invitation(
    *, principal: CurrentPrincipal, mutation: MutationDep, organization_id: uuid.UUID, invitation_id: uuid.UUID
) -> InvitationPublic:
    return await mutation.run(
        lambda conn: organizations.revoke_invitation(
            conn, mutation.platform, principal, organization_id, invitation_id
        ),
        InvitationPublic,
    )


@router.post("/invitations/accept", response_model=MemberPublic, responses=errors(404, 409, 413, 415))
async def accept_invitation(
    *, principal: CurrentPrincipal, mutation: MutationDep, body: InvitationAccept
) -> MemberPublic:
    """Join the organization with the invitation's role: once, before it expires, signed in with the
    address it was sent to."""
    return await mutation.run(
        lambda conn: organizations.accept(conn, mutation.platform, principal, body.token), MemberPublic
    )
