"""Tenant-admin account mutations: invites, the registration mode, (de)activating users."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import strawberry

from graph_api.accounts import change_user_active
from graph_api.context import Info
from graph_api.errors import BadUserInput, ObjectNotFound
from graph_api.queries import require_admin
from graph_api.types import InvitePayload, RegistrationMode, User
from storage.errors import NotFound
from storage.models import Registration, UserRole
from storage.repositories import invites as invites_repo
from storage.repositories import tenants as tenants_repo
from storage.repositories.users import normalize_email


def _invite_role(role: str) -> UserRole:
    try:
        return UserRole(role)
    except ValueError as error:
        raise BadUserInput("role must be user or admin.") from error


def _invite_email(email: str | None) -> str | None:
    if email is None:
        return None
    local, at, domain = email.strip().partition("@")
    if not (local and at and "." in domain) or len(email) > 320:
        raise BadUserInput("email is not a valid address.")
    return normalize_email(email)


@strawberry.type
class AccountAdminMutation:
    @strawberry.mutation
    async def create_invite(
        self, info: Info, email: str | None = None, role: str = "user"
    ) -> InvitePayload:
        """A single-use invite to register in the caller's tenant (for ``email`` only, when
        given), expiring after ``RECSERVE_INVITE_HOURS``. The token is shown only here."""
        principal = await require_admin(info.context)
        wanted_role, wanted_email = _invite_role(role), _invite_email(email)
        hours = info.context.services.settings.invite_hours
        async with info.context.session() as session:
            tenant = await tenants_repo.get_tenant(session=session, tenant_id=principal.tenant_id)
            if tenant.registration == Registration.CLOSED:
                raise BadUserInput("Registration is closed in this tenant; allow invites first.")
            issued = await invites_repo.create_invite(
                session=session,
                tenant_id=principal.tenant_id,
                expires_at=datetime.now(UTC) + timedelta(hours=hours),
                email=wanted_email,
                role=wanted_role,
                created_by=principal.user_id,
            )
        invite = issued.invite
        return InvitePayload(
            token=issued.token,
            expires_at=invite.expires_at,
            email=invite.email,
            role=str(invite.role),
        )

    @strawberry.mutation
    async def set_registration(self, info: Info, mode: RegistrationMode) -> RegistrationMode:
        """Who may register in the caller's tenant from now on."""
        principal = await require_admin(info.context)
        async with info.context.session() as session:
            await tenants_repo.set_tenant_registration(
                session=session, tenant_id=principal.tenant_id, registration=mode.value
            )
        return mode

    @strawberry.mutation
    async def deactivate_user(self, info: Info, id: uuid.UUID) -> User:
        """Stop a user of the caller's tenant: their tokens, refreshes and live subscriptions
        end at once; their data stays."""
        principal = await require_admin(info.context)
        if id == principal.user_id:
            raise BadUserInput("An admin cannot deactivate themselves.")
        return await _set_active(info, principal.tenant_id, id, active=False)

    @strawberry.mutation
    async def reactivate_user(self, info: Info, id: uuid.UUID) -> User:
        principal = await require_admin(info.context)
        return await _set_active(info, principal.tenant_id, id, active=True)


async def _set_active(info: Info, tenant_id: uuid.UUID, user_id: uuid.UUID, active: bool) -> User:
    services = info.context.services
    try:
        row = await change_user_active(
            services.database, services.accounts, tenant_id, user_id, active
        )
    except NotFound as error:  # also another tenant's user: existence is not revealed
        raise ObjectNotFound("User not found.") from error
    return User.from_row(row)
