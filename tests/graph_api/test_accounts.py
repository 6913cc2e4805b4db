"""Accounts: who may register, sign-in throttling, refresh rotation, logout, deactivation."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from cluster import operations as ops
from storage.db import create_database, drop_database
from storage.errors import Unavailable
from storage.models import Registration, Tenant, User
from storage.repositories import invites as invites_repo
from tests.graph_api.cache_backends import backend_api
from tests.graph_api.conftest import (
    PASSWORD,
    REGISTER,
    Api,
    make_settings,
    registration_input,
    running_api,
)
from tests.graph_api.ws_client import graphql_socket, live_server

__all__ = ["backend_api"]

LOGIN = """mutation($i: LoginInput!) {
  login(input: $i) { accessToken refreshToken user { id email } }
}"""
REFRESH = "mutation($t: String!) { refreshToken(token: $t) { accessToken refreshToken } }"
ME = "{ me { id email } }"
INVITE = """mutation($email: String, $role: String! = "user") {
  createInvite(email: $email, role: $role) { token expiresAt email role }
}"""
DEACTIVATE = "mutation($id: UUID!) { deactivateUser(id: $id) { id } }"
REACTIVATE = "mutation($id: UUID!) { reactivateUser(id: $id) { id } }"


def _error(payload: dict[str, Any]) -> tuple[str, str]:
    assert payload.get("data") is None, payload
    error = payload["errors"][0]
    return error["extensions"]["code"], error["message"]


async def _count(api: Api, model: Any) -> int:
    async with api.database.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def _register(api: Api, email: str, domain: str, **extra: Any) -> dict[str, Any]:
    return await api.gql(REGISTER, {"input": registration_input(email, domain, **extra)})


async def _login(api: Api, email: str, domain: str, password: str = PASSWORD) -> dict[str, Any]:
    credentials = {"email": email, "password": password, "tenantDomain": domain}
    return await api.gql(LOGIN, {"i": credentials})


# -- 1-3: registration ----------------------------------------------------------------------


async def test_register_never_creates_a_tenant(api: Api) -> None:
    """An unknown domain is refused exactly like a closed tenant, and nothing is stored."""
    unknown = await _register(api, "mallory@new.example", "new.example")
    await ops.ensure_tenant(api.database, domain="closed.example")  # operator default: closed
    closed = await _register(api, "mallory@closed.example", "closed.example")
    assert _error(unknown) == _error(closed)
    assert _error(unknown)[0] == "BAD_USER_INPUT"
    assert await _count(api, Tenant) == 1  # only the operator's
    assert await _count(api, User) == 0


async def test_operator_tenants_start_closed(api: Api) -> None:
    tenant = await ops.ensure_tenant(api.database, domain="shut.example")
    assert tenant[0].registration == Registration.CLOSED


async def test_an_existing_email_is_refused_like_any_refusal(api: Api) -> None:
    """No enumeration: an existing account's refusal equals the unknown-domain refusal."""
    await api.register("ada@open.example", "open.example")
    users = await _count(api, User)
    taken = await _register(api, "ADA@open.example", "open.example")
    unknown = await _register(api, "ada@nowhere.example", "nowhere.example")
    assert _error(taken) == _error(unknown)
    assert "already" not in _error(taken)[1]
    assert await _count(api, User) == users
    fresh = await _register(api, "bea@open.example", "open.example")
    assert "errors" not in fresh, fresh


async def test_invite_only_tenant(api: Api) -> None:
    await api.create_tenant("club.example", registration="invite")
    admin = (
        await ops.issue_token_in(
            api.database, api.settings, domain="club.example", email="root@club.example", admin=True
        )
    ).access_token
    no_invite = await _register(api, "cy@club.example", "club.example")
    assert _error(no_invite) == _error(await _register(api, "x@none.example", "none.example"))
    forged = await _register(api, "cy@club.example", "club.example", inviteToken="guess")
    assert _error(forged) == _error(no_invite)

    invite = (await api.ok(INVITE, {"email": "cy@club.example"}, admin))["createInvite"]
    assert invite["email"] == "cy@club.example" and invite["role"] == "user"
    other_email = await _register(
        api, "dee@club.example", "club.example", inviteToken=invite["token"]
    )
    assert _error(other_email) == _error(no_invite)
    joined = await _register(api, "Cy@club.example", "club.example", inviteToken=invite["token"])
    assert joined["data"]["register"]["user"]["role"] == "user", joined
    again = await _register(api, "cy2@club.example", "club.example", inviteToken=invite["token"])
    assert _error(again) == _error(no_invite)  # single use

    promoted = (await api.ok(INVITE, {"role": "admin"}, admin))["createInvite"]
    made = await _register(api, "eve@club.example", "club.example", inviteToken=promoted["token"])
    assert made["data"]["register"]["user"]["role"] == "admin"

    member = joined["data"]["register"]["accessToken"]
    assert _error(await api.gql(INVITE, {}, member))[0] == "FORBIDDEN"


async def test_an_expired_invite_is_refused(api: Api) -> None:
    tenant_id = await api.create_tenant("late.example", registration="invite")
    async with api.database.session() as session:
        issued = await invites_repo.create_invite(
            session=session,
            tenant_id=tenant_id,
            expires_at=datetime.now(UTC) - timedelta(seconds=1),
        )
    late = await _register(api, "lee@late.example", "late.example", inviteToken=issued.token)
    assert _error(late)[0] == "BAD_USER_INPUT"
    assert await _count(api, User) == 0


async def test_an_invite_of_another_tenant_is_refused(api: Api) -> None:
    await api.create_tenant("one.example", registration="invite")
    await api.create_tenant("two.example", registration="invite")
    admin = (
        await ops.issue_token_in(
            api.database, api.settings, domain="one.example", email="r@one.example", admin=True
        )
    ).access_token
    token = (await api.ok(INVITE, {}, admin))["createInvite"]["token"]
    crossed = await _register(api, "z@two.example", "two.example", inviteToken=token)
    assert _error(crossed)[0] == "BAD_USER_INPUT"


async def test_admin_changes_registration_mode(api: Api) -> None:
    admin, _ = await api.register("root@mode.example", "mode.example")
    closed = await api.ok("mutation { setRegistration(mode: CLOSED) }", token=admin)
    assert closed["setRegistration"] == "CLOSED"
    refused = await _register(api, "late@mode.example", "mode.example")
    assert _error(refused)[0] == "BAD_USER_INPUT"
    assert _error(await api.gql(INVITE, {}, admin))[0] == "BAD_USER_INPUT"  # closed: no invites
    await api.ok("mutation { setRegistration(mode: OPEN) }", token=admin)
    assert "errors" not in await _register(api, "late@mode.example", "mode.example")
    user, _ = await api.register("plain@mode.example", "mode.example")
    denied = await api.gql("mutation { setRegistration(mode: OPEN) }", token=user)
    assert _error(denied)[0] == "FORBIDDEN"


# -- 4: sign-in throttle --------------------------------------------------------------------


async def test_login_locks_the_account_after_repeated_failures(api: Api) -> None:
    await api.register("fay@lock.example", "lock.example")
    codes = [
        _error(await _login(api, "fay@lock.example", "lock.example", "wrong password!"))[0]
        for _ in range(8)
    ]
    limit = api.settings.login_max_failures
    assert codes[:limit] == ["UNAUTHENTICATED"] * limit
    assert set(codes[limit:]) == {"RATE_LIMITED"}
    right = await _login(api, "fay@lock.example", "lock.example")
    code, _ = _error(right)
    assert code == "RATE_LIMITED"
    assert right["errors"][0]["extensions"]["retryAfter"] >= 1
    # Another account of the tenant is not affected.
    await api.register("gus@lock.example", "lock.example")
    assert "errors" not in await _login(api, "gus@lock.example", "lock.example")


async def test_the_lockout_looks_the_same_for_unknown_accounts(api: Api) -> None:
    await api.register("fay@same.example", "same.example")
    answers = {}
    for email in ("fay@same.example", "nobody@same.example"):
        for _ in range(api.settings.login_max_failures):
            await _login(api, email, "same.example", "wrong password!")
        answers[email] = _error(await _login(api, email, "same.example", "wrong password!"))
    assert answers["fay@same.example"] == answers["nobody@same.example"]
    assert answers["fay@same.example"][0] == "RATE_LIMITED"


async def test_a_successful_login_resets_the_failures(api: Api) -> None:
    await api.register("hal@reset.example", "reset.example")
    for _round in range(3):
        for _ in range(api.settings.login_max_failures - 1):
            await _login(api, "hal@reset.example", "reset.example", "wrong password!")
        assert "errors" not in await _login(api, "hal@reset.example", "reset.example")


@pytest.fixture
async def quick_api(tmp_path: Path) -> AsyncIterator[Api]:
    settings = make_settings(
        tmp_path, login_lockout_seconds=1, login_max_failures=2, account_state_ttl_seconds=1
    )
    async with running_api(f"sqlite+aiosqlite:///{tmp_path}/quick.db", settings) as running:
        yield running


async def test_the_lockout_ends(quick_api: Api) -> None:
    api = quick_api
    await api.register("ivy@ends.example", "ends.example")
    for _ in range(3):
        await _login(api, "ivy@ends.example", "ends.example", "wrong password!")
    assert _error(await _login(api, "ivy@ends.example", "ends.example"))[0] == "RATE_LIMITED"
    await asyncio.sleep(1.2)
    assert "errors" not in await _login(api, "ivy@ends.example", "ends.example")


# -- 5: refresh rotation and logout ---------------------------------------------------------


async def _session(api: Api, email: str, domain: str) -> dict[str, str]:
    await api.register(email, domain)
    return (await api.ok(LOGIN, {"i": _credentials(email, domain)}))["login"]


def _credentials(email: str, domain: str) -> dict[str, str]:
    return {"email": email, "password": PASSWORD, "tenantDomain": domain}


async def test_refresh_rotates_and_the_old_token_dies(api: Api) -> None:
    first = (await _session(api, "jo@rot.example", "rot.example"))["refreshToken"]
    second = (await api.ok(REFRESH, {"t": first}))["refreshToken"]
    assert second["refreshToken"] != first
    assert _error(await api.gql(REFRESH, {"t": first}))[0] == "UNAUTHENTICATED"


async def test_reusing_a_refresh_token_revokes_its_family(api: Api) -> None:
    login = await _session(api, "kim@reuse.example", "reuse.example")
    stolen = login["refreshToken"]
    renewed = (await api.ok(REFRESH, {"t": stolen}))["refreshToken"]
    # The attacker replays the copied token: refused, and the legitimate chain ends too.
    assert _error(await api.gql(REFRESH, {"t": stolen}))[0] == "UNAUTHENTICATED"
    assert _error(await api.gql(REFRESH, {"t": renewed["refreshToken"]}))[0] == "UNAUTHENTICATED"
    assert _error(await api.gql(ME, token=renewed["accessToken"]))[0] == "UNAUTHENTICATED"
    # Other logins of the same user are other families, untouched.
    other = await api.ok(LOGIN, {"i": _credentials("kim@reuse.example", "reuse.example")})
    assert "errors" not in await api.gql(REFRESH, {"t": other["login"]["refreshToken"]})


async def test_logout_ends_the_session_only(api: Api) -> None:
    phone = await _session(api, "lu@out.example", "out.example")
    laptop = (await api.ok(LOGIN, {"i": _credentials("lu@out.example", "out.example")}))["login"]
    assert (await api.ok("mutation { logout }", token=phone["accessToken"]))["logout"] is True
    assert _error(await api.gql(ME, token=phone["accessToken"]))[0] == "UNAUTHENTICATED"
    assert _error(await api.gql(REFRESH, {"t": phone["refreshToken"]}))[0] == "UNAUTHENTICATED"
    assert "errors" not in await api.gql(ME, token=laptop["accessToken"])
    await api.ok("mutation { logout(allSessions: true) }", token=laptop["accessToken"])
    assert _error(await api.gql(REFRESH, {"t": laptop["refreshToken"]}))[0] == "UNAUTHENTICATED"
    assert _error(await api.gql("mutation { logout }"))[0] == "UNAUTHENTICATED"


async def test_rotation_is_shared_by_replicas(tmp_path: Path) -> None:
    """Two app instances on one database: a token used on one is dead on the other."""
    url = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    settings = make_settings(tmp_path)
    async with running_api(url, settings) as one, running_api(url, settings) as two:
        login = await _session(one, "mo@replica.example", "replica.example")
        await one.ok(REFRESH, {"t": login["refreshToken"]})
        assert _error(await two.gql(REFRESH, {"t": login["refreshToken"]}))[0] == "UNAUTHENTICATED"


# -- 6: deactivation ------------------------------------------------------------------------


async def test_a_deactivated_users_tokens_stop_at_once(api: Api) -> None:
    admin, _ = await api.register("root@deact.example", "deact.example")
    login = await _session(api, "ned@deact.example", "deact.example")
    user_id = login["user"]["id"]
    assert "errors" not in await api.gql(ME, token=login["accessToken"])  # state now cached
    await api.ok(DEACTIVATE, {"id": user_id}, admin)
    assert _error(await api.gql(ME, token=login["accessToken"]))[0] == "UNAUTHENTICATED"
    assert _error(await api.gql(REFRESH, {"t": login["refreshToken"]}))[0] == "UNAUTHENTICATED"
    relogin = await _login(api, "ned@deact.example", "deact.example")
    assert _error(relogin)[0] == "UNAUTHENTICATED"
    await api.ok(REACTIVATE, {"id": user_id}, admin)
    again = await api.ok(LOGIN, {"i": _credentials("ned@deact.example", "deact.example")})
    assert "errors" not in await api.gql(ME, token=again["login"]["accessToken"])


async def test_only_a_tenant_admin_deactivates_their_own_users(api: Api) -> None:
    admin, admin_id = await api.register("root@ad.example", "ad.example")
    member, _member_id = await api.register("pat@ad.example", "ad.example")
    _other_admin, other_id = await api.register("root@other.example", "other.example")
    assert _error(await api.gql(DEACTIVATE, {"id": admin_id}, member))[0] == "FORBIDDEN"
    assert _error(await api.gql(DEACTIVATE, {"id": other_id}, admin))[0] == "NOT_FOUND"
    assert _error(await api.gql(DEACTIVATE, {"id": admin_id}, admin))[0] == "BAD_USER_INPUT"
    assert "errors" not in await api.gql(ME, token=member)


async def test_operator_deactivation_reaches_a_running_api(quick_api: Api) -> None:
    """The CLI has its own (embedded) cache: the API notices within the state TTL."""
    api = quick_api
    token, _ = await api.register("quin@cli.example", "cli.example")
    assert "errors" not in await api.gql(ME, token=token)
    operator = make_settings(
        api.settings.data_dir, database_url=str(api.database.engine.url.render_as_string(False))
    )
    await ops.set_user_active(
        operator, domain="cli.example", email="quin@cli.example", active=False
    )
    await asyncio.sleep(api.settings.account_state_ttl_seconds + 0.2)
    assert _error(await api.gql(ME, token=token))[0] == "UNAUTHENTICATED"
    await ops.set_tenant_active(operator, domain="cli.example", active=True)  # no-op for users
    await ops.set_user_active(operator, domain="cli.example", email="quin@cli.example", active=True)
    await asyncio.sleep(api.settings.account_state_ttl_seconds + 0.2)
    assert "errors" not in await api.gql(ME, token=token)
    await ops.set_tenant_active(operator, domain="cli.example", active=False)
    await asyncio.sleep(api.settings.account_state_ttl_seconds + 0.2)
    assert _error(await api.gql(ME, token=token))[0] == "UNAUTHENTICATED"


async def test_a_deactivated_users_live_subscription_stops(api: Api) -> None:
    admin, _ = await api.register("root@ws.example", "ws.example")
    token, user_id = await api.register("rae@ws.example", "ws.example")
    async with (
        live_server(api.app) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as http,
        graphql_socket(f"ws://{address}/graphql", token) as ws,
    ):
        operation = await ws.subscribe("subscription { userActivity { kind } }")
        assert await ws.nothing_within(0.3)
        body = {"query": DEACTIVATE, "variables": {"id": user_id}}
        reply = await http.post("/graphql", json=body, headers={"Authorization": f"Bearer {admin}"})
        assert "errors" not in reply.json(), reply.json()
        ended = await ws.receive(wait_s=5)
        assert ended["id"] == operation and ended["type"] == "next", ended
        assert ended["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", ended
        assert (await ws.receive(wait_s=5)) == {"id": operation, "type": "complete"}
        # A new operation on the same, still open socket is refused as well.
        again = await ws.subscribe("subscription { userActivity { kind } }")
        refused = await ws.receive(wait_s=5)
        assert refused["id"] == again, refused
        errors = refused["payload"] if refused["type"] == "error" else refused["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED", refused


async def test_an_unknown_user_id_token_is_refused(api: Api) -> None:
    tenant_id = await api.create_tenant("ghost.example")
    ghost = api.token_for(tenant_id, uuid.uuid4())
    assert _error(await api.gql(ME, token=ghost))[0] == "UNAUTHENTICATED"


# -- the same on Redis / Redis Cluster and on PostgreSQL --------------------------------------


async def test_lockout_sessions_and_deactivation_on_every_cache(backend_api: Api) -> None:
    """The counters, ended-session markers and account states live in the shared cache."""
    api = backend_api
    domain = f"{uuid.uuid4().hex[:8]}.example"  # fresh keys on a shared Redis
    admin, _ = await api.register(f"root@{domain}", domain)
    login = await _session(api, f"sam@{domain}", domain)
    for _ in range(api.settings.login_max_failures):
        await _login(api, f"sam@{domain}", domain, "wrong password!")
    assert _error(await _login(api, f"sam@{domain}", domain))[0] == "RATE_LIMITED"
    renewed = (await api.ok(REFRESH, {"t": login["refreshToken"]}))["refreshToken"]
    assert _error(await api.gql(REFRESH, {"t": login["refreshToken"]}))[0] == "UNAUTHENTICATED"
    assert _error(await api.gql(ME, token=renewed["accessToken"]))[0] == "UNAUTHENTICATED"
    other = await api.register(f"tom@{domain}", domain)
    assert "errors" not in await api.gql(ME, token=other[0])
    await api.ok(DEACTIVATE, {"id": other[1]}, admin)
    assert _error(await api.gql(ME, token=other[0]))[0] == "UNAUTHENTICATED"


@pytest.mark.services
async def test_accounts_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    url = postgres_url.rsplit("/", 1)[0] + f"/recserve_acc_{uuid.uuid4().hex[:10]}"
    await create_database(url)
    try:
        async with running_api(url, make_settings(tmp_path)) as api:
            await test_register_never_creates_a_tenant(api)
            await test_an_existing_email_is_refused_like_any_refusal(api)
            await test_invite_only_tenant(api)
            await test_reusing_a_refresh_token_revokes_its_family(api)
            await test_logout_ends_the_session_only(api)
            await test_a_deactivated_users_tokens_stop_at_once(api)
    finally:
        await drop_database(url)


async def test_without_the_cache_the_database_decides(api: Api, monkeypatch) -> None:
    """A cache outage is slower, never more permissive: ended sessions and deactivated users
    are still refused, from the database."""
    admin, _ = await api.register("root@down.example", "down.example")
    gone = await _session(api, "una@down.example", "down.example")
    await api.ok("mutation { logout }", token=gone["accessToken"])
    kept = (await api.ok(LOGIN, {"i": _credentials("una@down.example", "down.example")}))["login"]
    vic, vic_id = await api.register("vic@down.example", "down.example")
    await api.ok(DEACTIVATE, {"id": vic_id}, admin)

    async def unavailable(keys: list[str]) -> list[Any]:
        raise Unavailable("cache get failed: connection refused")

    monkeypatch.setattr(api.cache, "_get_many_raw", unavailable)
    assert _error(await api.gql(ME, token=gone["accessToken"]))[0] == "UNAUTHENTICATED"
    assert _error(await api.gql(ME, token=vic))[0] == "UNAUTHENTICATED"
    assert "errors" not in await api.gql(ME, token=kept["accessToken"])


async def test_a_refused_registration_logs_no_traceback_and_no_password_hash(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Client errors are not logged; a constraint error's SQL parameters never reach a log."""
    await api.register("first@quiet.example", "quiet.example")
    with caplog.at_level(logging.INFO):
        payload = await api.gql(
            REGISTER, {"input": registration_input("first@quiet.example", "quiet.example")}
        )
    assert payload["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "argon2" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
