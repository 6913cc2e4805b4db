"""register, login and refreshToken: the only fields that work without a token.

Registering with an unknown tenant domain creates that tenant and makes the user its admin;
with a known domain the user joins it as a plain user. Login failures all give the same
message, whether the domain, email or password was wrong.
"""

from __future__ import annotations

import strawberry

from graph_api.auth import Principal, hash_password, verify_password
from graph_api.context import Info, RequestContext
from graph_api.errors import BadUserInput, Unauthenticated
from graph_api.inputs import LoginInput, RegisterInput, check_login
from graph_api.types import AuthPayload, User
from storage.errors import Conflict, NotFound
from storage.models import Tenant, UserRole
from storage.models import User as UserRow
from storage.repositories import tenants as tenants_repo
from storage.repositories import users as users_repo

MIN_PASSWORD_LENGTH = 8
_BAD_CREDENTIALS = "Invalid email, password or tenant."


def _check_registration(data: RegisterInput) -> None:
    local, at, domain = data.email.strip().partition("@")
    if not (local and at and "." in domain) or len(data.email) > 320:
        raise BadUserInput("email is not a valid address.")
    if not data.username.strip() or len(data.username) > 150:
        raise BadUserInput("username must be 1 to 150 characters.")
    if not MIN_PASSWORD_LENGTH <= len(data.password) <= 1024:
        raise BadUserInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters.")
    tenant_domain = data.tenant_domain.strip()
    if not tenant_domain or len(tenant_domain) > 255 or " " in tenant_domain:
        raise BadUserInput("tenantDomain is not a valid domain.")


def _payload(ctx: RequestContext, tenant: Tenant, user: UserRow) -> AuthPayload:
    principal = Principal(
        tenant_id=tenant.id, user_id=user.id, role=str(user.role), tier=str(tenant.tier)
    )
    tokens = ctx.services.tokens
    return AuthPayload(
        access_token=tokens.issue(principal, "access"),
        refresh_token=tokens.issue(principal, "refresh"),
        user=User.from_row(user),
    )


@strawberry.type
class AuthMutation:
    @strawberry.mutation
    async def register(self, info: Info, input: RegisterInput) -> AuthPayload:
        _check_registration(input)
        password_hash = await hash_password(input.password)
        async with info.context.session() as session:
            try:
                tenant = await tenants_repo.get_tenant_by_domain(
                    session=session, domain=input.tenant_domain
                )
                role = UserRole.USER
            except NotFound:
                domain = input.tenant_domain.strip()
                tenant = await tenants_repo.create_tenant(
                    session=session, name=domain, domain=domain
                )
                role = UserRole.ADMIN
            if not tenant.is_active:
                raise BadUserInput("This tenant does not accept registrations.")
            try:
                user = await users_repo.create_user(
                    session=session,
                    tenant_id=tenant.id,
                    email=input.email,
                    username=input.username.strip(),
                    password_hash=password_hash,
                    role=role,
                )
            except Conflict as error:
                raise BadUserInput("This email is already registered.") from error
        return _payload(info.context, tenant, user)

    @strawberry.mutation
    async def login(self, info: Info, input: LoginInput) -> AuthPayload:
        check_login(input)
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
        return _payload(info.context, tenant, user)

    @strawberry.mutation
    async def refresh_token(self, info: Info, token: str) -> AuthPayload:
        claimed = info.context.services.tokens.verify(token, expected_type="refresh")
        async with info.context.session() as session:
            try:
                tenant = await tenants_repo.get_tenant(session=session, tenant_id=claimed.tenant_id)
                user = await users_repo.get_user(
                    session=session, tenant_id=claimed.tenant_id, user_id=claimed.user_id
                )
            except NotFound as error:
                raise Unauthenticated("Invalid token.") from error
        if not (tenant.is_active and user.is_active):
            raise Unauthenticated("Invalid token.")
        # Role and tier are re-read, so a demoted admin's next access token is demoted too.
        return _payload(info.context, tenant, user)
