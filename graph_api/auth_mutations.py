"""register, login, refreshToken (work without a token) and logout.

Tenants are made by an operator (``recserve tenant create``), never by registering. Whether
``register`` is accepted depends on the tenant's ``registration``: ``open`` (anyone),
``invite`` (a valid, unused invite from the tenant's admin) or ``closed`` (nobody, the
default). Every refusal -- unknown or inactive tenant, closed tenant, missing or bad invite,
and an email that is already registered -- gives the one same error after the same work
(the password is hashed first in every case), so ``register`` tells a prober neither which
domains exist nor which emails have accounts. Input that is malformed (bad email, short
password) is still reported precisely, since it reveals nothing.

Login failures all give the same message, whether the domain, email or password was wrong,
and are throttled per account (``LoginThrottle``). Each login or registration starts a refresh
family; ``refreshToken`` rotates it (the old refresh token stops working) and a replayed old
token revokes the family. ``logout`` ends the current session (or all of the caller's).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from graph_api.auth import Principal, hash_password, verify_password
from graph_api.context import Info, RequestContext
from graph_api.errors import BadUserInput, Unauthenticated
from graph_api.inputs import LoginInput, RegisterInput, check_login
from graph_api.types import AuthPayload, User
from storage.errors import Conflict, NotFound
from storage.models import Invite, Registration, Tenant, UserRole
from storage.models import User as UserRow
from storage.repositories import invites as invites_repo
from storage.repositories import sessions as sessions_repo
from storage.repositories import tenants as tenants_repo
from storage.repositories import users as users_repo

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
_BAD_CREDENTIALS = "Invalid email, password or tenant."
REGISTRATION_REFUSED = (
    "Registration refused: the tenant does not accept it, the invite is not valid, "
    "or this email cannot be registered."
)
_INVALID_TOKEN = "Invalid token."


def _check_registration(data: RegisterInput) -> None:
    local, at, domain = data.email.strip().partition("@")
    if not (local and at and "." in domain) or len(data.email) > 320:
        raise BadUserInput("email is not a valid address.")
    if not data.username.strip() or len(data.username) > 150:
        raise BadUserInput("username must be 1 to 150 characters.")
    if not MIN_PASSWORD_LENGTH <= len(data.password) <= MAX_PASSWORD_LENGTH:
        raise BadUserInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters.")
    tenant_domain = data.tenant_domain.strip()
    if not tenant_domain or len(tenant_domain) > 255 or " " in tenant_domain:
        raise BadUserInput("tenantDomain is not a valid domain.")
    if data.invite_token is not None and not 1 <= len(data.invite_token) <= 200:
        raise BadUserInput("inviteToken is not a valid invite.")


def _refused() -> BadUserInput:
    return BadUserInput(REGISTRATION_REFUSED)


async def _open_tenant(session: AsyncSession, domain: str) -> Tenant | None:
    """The tenant if it exists, is active and takes registrations at all; None otherwise."""
    try:
        tenant = await tenants_repo.get_tenant_by_domain(session=session, domain=domain)
    except NotFound:
        return None
    if not tenant.is_active or tenant.registration == Registration.CLOSED:
        return None
    return tenant


async def _admission(session: AsyncSession, tenant: Tenant, data: RegisterInput) -> Invite | None:
    """The invite this registration consumes (None in an open tenant without one).

    Raises the refusal when the tenant needs an invite and none valid was given.
    """
    if data.invite_token is None:
        if tenant.registration != Registration.OPEN:
            raise _refused()
        return None
    invite = await invites_repo.consume_invite(
        session=session, tenant_id=tenant.id, token=data.invite_token, email=data.email
    )
    if invite is None:
        raise _refused()
    return invite


async def _start_session(
    ctx: RequestContext, session: AsyncSession, tenant: Tenant, user: UserRow
) -> AuthPayload:
    """A new refresh family (in the caller's transaction) and the tokens that open it."""
    tokens = ctx.services.tokens
    jti = uuid.uuid4().hex
    family = await sessions_repo.start_family(
        session=session,
        tenant_id=tenant.id,
        user_id=user.id,
        jti=jti,
        expires_at=datetime.now(UTC) + tokens.refresh_lifetime,
    )
    return _payload(ctx, tenant, user, family.id, jti)


def _payload(
    ctx: RequestContext, tenant: Tenant, user: UserRow, family_id: uuid.UUID, jti: str
) -> AuthPayload:
    principal = Principal(
        tenant_id=tenant.id,
        user_id=user.id,
        role=str(user.role),
        tier=str(tenant.tier),
        session_id=family_id,
    )
    tokens = ctx.services.tokens
    return AuthPayload(
        access_token=tokens.issue(principal, "access"),
        refresh_token=tokens.issue(principal, "refresh", jti=jti),
        user=User.from_row(user),
    )


@strawberry.type
class AuthMutation:
    @strawberry.mutation
    async def register(self, info: Info, input: RegisterInput) -> AuthPayload:
        _check_registration(input)
        # Hashed before anything is looked up: a refusal costs the same time as a success.
        password_hash = await hash_password(input.password)
        async with info.context.session() as session:
            tenant = await _open_tenant(session, input.tenant_domain)
            if tenant is None:
                raise _refused()
            invite = await _admission(session, tenant, input)
            try:
                user = await users_repo.create_user(
                    session=session,
                    tenant_id=tenant.id,
                    email=input.email,
                    username=input.username.strip(),
                    password_hash=password_hash,
                    role=invite.role if invite is not None else UserRole.USER,
                )
            except Conflict as error:
                # Raised inside the session: the invite's consumption is rolled back too.
                raise _refused() from error
            if invite is not None:
                await invites_repo.mark_invite_user(
                    session=session, invite_id=invite.id, user_id=user.id
                )
            return await _start_session(info.context, session, tenant, user)

    @strawberry.mutation
    async def login(self, info: Info, input: LoginInput) -> AuthPayload:
        check_login(input)
        throttle = info.context.services.login_throttle
        await throttle.begin(input.tenant_domain, input.email)
        async with info.context.session() as session:
            try:
                tenant = await tenants_repo.get_tenant_by_domain(
                    session=session, domain=input.tenant_domain
                )
                user: UserRow | None = await users_repo.get_user_by_email(
                    session=session, tenant_id=tenant.id, email=input.email
                )
            except NotFound:
                tenant, user = None, None
        valid = await verify_password(user.password_hash if user else None, input.password)
        if not valid or tenant is None or user is None:
            raise Unauthenticated(_BAD_CREDENTIALS)
        if not (tenant.is_active and user.is_active):
            raise Unauthenticated(_BAD_CREDENTIALS)
        async with info.context.session() as session:
            payload = await _start_session(info.context, session, tenant, user)
        await throttle.succeeded(input.tenant_domain, input.email)
        return payload

    @strawberry.mutation
    async def refresh_token(self, info: Info, token: str) -> AuthPayload:
        """New access and refresh tokens; the refresh token given is used up. Presenting a
        used one again revokes its whole family (every token descended from that login)."""
        ctx = info.context
        claimed, jti = ctx.services.tokens.verify_refresh(token)
        assert claimed.session_id is not None  # verify_refresh refuses tokens without one
        next_jti = uuid.uuid4().hex
        async with ctx.session() as session:
            try:
                tenant = await tenants_repo.get_tenant(session=session, tenant_id=claimed.tenant_id)
                user = await users_repo.get_user(
                    session=session, tenant_id=claimed.tenant_id, user_id=claimed.user_id
                )
            except NotFound as error:
                raise Unauthenticated(_INVALID_TOKEN) from error
            if not (tenant.is_active and user.is_active):
                raise Unauthenticated(_INVALID_TOKEN)
            outcome = await sessions_repo.rotate_family(
                session=session,
                tenant_id=tenant.id,
                user_id=user.id,
                family_id=claimed.session_id,
                presented_jti=jti,
                next_jti=next_jti,
                expires_at=datetime.now(UTC) + ctx.services.tokens.refresh_lifetime,
            )
        # The session has committed: a detected reuse stays revoked although we refuse.
        if outcome == "reused":
            await ctx.services.accounts.sessions_ended(tenant.id, [claimed.session_id])
        if outcome != "rotated":
            raise Unauthenticated(_INVALID_TOKEN)
        # Role and tier are re-read, so a demoted admin's next access token is demoted too.
        return _payload(ctx, tenant, user, claimed.session_id, next_jti)

    @strawberry.mutation
    async def logout(self, info: Info, all_sessions: bool = False) -> bool:
        """End the caller's session: its refresh tokens and access tokens stop working.
        ``allSessions`` ends every session of the caller. False when nothing was live."""
        ctx = info.context
        principal = await ctx.authorize()
        async with ctx.session() as session:
            if all_sessions:
                ended = await sessions_repo.revoke_user_families(
                    session=session,
                    tenant_id=principal.tenant_id,
                    user_id=principal.user_id,
                    reason="logout",
                )
            elif principal.session_id is not None and await sessions_repo.revoke_family(
                session=session,
                tenant_id=principal.tenant_id,
                family_id=principal.session_id,
                user_id=principal.user_id,
            ):
                ended = [principal.session_id]
            else:
                ended = []
        await ctx.services.accounts.sessions_ended(principal.tenant_id, ended)
        return bool(ended)
