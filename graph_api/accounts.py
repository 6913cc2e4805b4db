"""Whether a verified token may still act: its user and tenant active, its session not ended.

A token stays valid by signature until it expires, so deactivating a user or logging out must
be checked on every request. The check is one cache read (``get_many`` of the user's cached
state and, when the token has a session, its "ended" marker); on a miss the database answers
and the state is cached for ``account_state_ttl_seconds``. Deactivation, logout and reuse
detection write the cache first (so every replica sharing it sees the change at once) and then
publish on the tenant's auth channel, which wakes live subscriptions so they stop. When the
cache is unreachable the database answers every time: slower, never more permissive.

The sign-in throttle (``LoginThrottle``) also lives here: failed logins are counted per account
(tenant domain + email, whether or not either exists) in the cache, and an account that
reaches ``login_max_failures`` is locked for ``login_lockout_seconds``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from graph_api.auth import Principal
from graph_api.errors import RateLimited
from graph_api.row_cache import row_key, snapshot
from storage.cache.base import Cache, tenant_key
from storage.cache.channels import auth_channel
from storage.errors import Unavailable
from storage.repositories import sessions as sessions_repo
from storage.repositories import tenants as tenants_repo
from storage.repositories import users as users_repo
from storage.settings import Settings

logger = logging.getLogger(__name__)

ACTIVE = "active"
INACTIVE = "inactive"


def user_state_key(tenant_id: object, user_id: object) -> str:
    return tenant_key(tenant_id, "auth", "user-state", user_id)


def tenant_state_key(tenant_id: object) -> str:
    return tenant_key(tenant_id, "auth", "tenant-state")


def ended_session_key(tenant_id: object, session_id: object) -> str:
    return tenant_key(tenant_id, "auth", "ended-session", session_id)


class AccountGuard:
    def __init__(self, cache: Cache, database: Any, settings: Settings) -> None:
        self._cache = cache
        self._database = database
        self.state_ttl = float(settings.account_state_ttl_seconds)
        self._row_ttl = float(settings.cache_row_ttl_seconds)
        # An ended session's access tokens die by expiry; the marker need not outlive them.
        self._session_ttl = float(settings.access_token_minutes * 60)

    async def is_active(self, principal: Principal) -> bool:
        """True while the user and tenant exist and are active and the session was not ended."""
        active, _ = await self.check(principal)
        return active

    async def check(
        self, principal: Principal, read_along: Sequence[str] = ()
    ) -> tuple[bool, dict[str, Any] | None]:
        """``is_active``, reading the tenant's keys ``read_along`` in the same round trip (a
        request's cached result): ``(active, {key: value})``, None when the cache is down."""
        tenant, user = principal.tenant_id, principal.user_id
        keys = [user_state_key(tenant, user), tenant_state_key(tenant)]
        if principal.session_id is not None:
            keys.append(ended_session_key(tenant, principal.session_id))
        try:
            hits = await self._cache.get_many([*keys, *read_along])
        except Unavailable as error:
            logger.warning("account state read from the database, cache unavailable: %s", error)
            return await self._read(principal, with_session=True), None
        along = {key: hits.get(key) for key in read_along}
        if any(hits.get(key) == INACTIVE for key in keys[1:]):
            return False, along
        state = hits.get(keys[0])
        if state is None:
            active = await self._read(principal)
            await self._quietly(
                self._cache.set(keys[0], ACTIVE if active else INACTIVE, self.state_ttl)
            )
            return active, along
        return bool(state == ACTIVE), along

    async def _read(self, principal: Principal, *, with_session: bool = False) -> bool:
        """The database's answer; ``with_session`` also asks whether the session was ended
        (normally the cache's markers say so: this is the path when the cache is down)."""
        if not (with_session and principal.session_id is not None):
            return await self._database.read(lambda session: self._read_row(session, principal))
        async with self._database.session(readonly=True) as session:
            active = await users_repo.account_state(
                session=session, tenant_id=principal.tenant_id, user_id=principal.user_id
            )
            if not active:
                return False
            family = await sessions_repo.get_family(
                session=session, tenant_id=principal.tenant_id, family_id=principal.session_id
            )
            return family is not None and family.revoked_at is None

    async def _read_row(self, session: Any, principal: Principal) -> bool:
        """The state from the user's row, which also goes to the row cache: the request that
        checks it next loads the same row (preferences, profile) and then need not read it."""
        user, tenant_active = await users_repo.account_row(
            session=session, tenant_id=principal.tenant_id, user_id=principal.user_id
        )
        if user is None:
            return False
        if self._row_ttl > 0:
            key = row_key(principal.tenant_id, "user", principal.user_id)
            await self._quietly(self._cache.set(key, snapshot("user", user), self._row_ttl))
        return bool(user.is_active) and tenant_active

    async def user_changed(self, tenant_id: uuid.UUID, user_id: uuid.UUID, active: bool) -> None:
        """Call after committing a user's (de)activation."""
        key = user_state_key(tenant_id, user_id)
        if active:
            await self._quietly(self._cache.delete(key))
        else:
            await self._quietly(self._cache.set(key, INACTIVE, self.state_ttl))
        await self._announce(tenant_id, {"user_id": str(user_id), "active": active})

    async def tenant_changed(self, tenant_id: uuid.UUID, active: bool) -> None:
        """Call after committing a tenant's (de)activation: all its users follow."""
        key = tenant_state_key(tenant_id)
        if active:
            await self._quietly(self._cache.delete(key))
        else:
            await self._quietly(self._cache.set(key, INACTIVE, self.state_ttl * 2))
        await self._quietly(self._cache.delete_prefix(tenant_key(tenant_id, "auth", "user-state")))
        await self._announce(tenant_id, {"tenant": True, "active": active})

    async def sessions_ended(self, tenant_id: uuid.UUID, session_ids: Iterable[uuid.UUID]) -> None:
        """Call after committing the revocation of refresh families: their access tokens stop."""
        ended = [str(session) for session in session_ids]
        if not ended:
            return
        markers = {ended_session_key(tenant_id, session): INACTIVE for session in ended}
        await self._quietly(self._cache.set_many(markers, self._session_ttl))
        await self._announce(tenant_id, {"session_ids": ended})

    async def _announce(self, tenant_id: uuid.UUID, event: dict[str, Any]) -> None:
        await self._quietly(self._cache.publish(auth_channel(tenant_id), event))

    async def _quietly(self, operation: Any) -> Any:
        # The database is the truth; a cache outage only delays the effect by the state TTL.
        try:
            return await operation
        except Unavailable as error:
            logger.warning("account state not cached, cache unavailable: %s", error)
            return None

    async def wait_until_inactive(self, principal: Principal) -> None:
        """Return once the principal may no longer act: woken by an event about them or their
        tenant, and re-checked every ``state_ttl`` seconds in case an event was missed."""
        async with self._auth_events(principal.tenant_id) as events:
            while True:
                try:
                    if not await self.is_active(principal):
                        return
                except Unavailable as error:
                    # A database outage must not read as a deactivation; ask again later.
                    logger.warning("account state unknown, database unavailable: %s", error)
                await _next_event(events, self.state_ttl)

    def _auth_events(self, tenant_id: uuid.UUID) -> Any:
        return _Subscribed(self._cache, auth_channel(tenant_id))


class _Subscribed:
    """``async with`` over a cache subscription that degrades to polling if the cache is down."""

    def __init__(self, cache: Cache, channel: str) -> None:
        self._cache, self._channel, self._subscription = cache, channel, None

    async def __aenter__(self) -> Any:
        try:
            self._subscription = await self._cache.subscribe(self._channel)
        except Unavailable as error:
            logger.warning("auth events not followed, cache unavailable: %s", error)
        return self._subscription

    async def __aexit__(self, *exc: object) -> None:
        if self._subscription is not None:
            await self._subscription.aclose()


async def _next_event(subscription: Any, wait_seconds: float) -> None:
    if subscription is None:
        await asyncio.sleep(wait_seconds)
        return
    try:
        await subscription.get(wait_seconds=wait_seconds)
    except Unavailable:
        await asyncio.sleep(wait_seconds)


async def guarded(
    guard: AccountGuard, principal: Principal, source: AsyncIterator[Any], refusal: Exception
) -> AsyncIterator[Any]:
    """``source``'s items until the principal is deactivated or logged out, then ``refusal``.

    The stream's pending step is cancelled, so its cache subscription closes with it.
    """
    watcher = asyncio.ensure_future(guard.wait_until_inactive(principal))
    step: asyncio.Future[Any] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(source))
            await asyncio.wait({step, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                raise refusal
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        # Also when the client unsubscribes mid-wait: the pending step must end before the
        # source can be closed (closing a running generator is an error).
        for task in (step, watcher):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(*(t for t in (step, watcher) if t is not None), return_exceptions=True)
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


class LoginThrottle:
    """Per-account failed-login counter with a lockout, shared by replicas through the cache."""

    def __init__(self, cache: Cache, settings: Settings) -> None:
        self._cache = cache
        self.max_failures = settings.login_max_failures
        self.window = float(settings.login_failure_window_seconds)
        self.lockout = float(settings.login_lockout_seconds)

    @staticmethod
    def _keys(domain: str, email: str) -> tuple[str, str]:
        # Hashed: keys carry no email, and unknown accounts get keys just like known ones.
        account = f"{domain.strip().lower()}\n{email.strip().lower()}"
        digest = hashlib.sha256(account.encode()).hexdigest()[:32]
        return tenant_key(f"login-{digest}", "failures"), tenant_key(f"login-{digest}", "lock")

    async def begin(self, domain: str, email: str) -> None:
        """Count this attempt as a failure until it succeeds; RATE_LIMITED while locked.

        Counting before the password is checked means concurrent guesses cannot slip past the
        limit while the first ones are still being verified.
        """
        failures, lock = self._keys(domain, email)
        try:
            until = await self._cache.get(lock)
            if until is None:
                count = await self._cache.incr(failures, 1, ttl=self.window)
                if count <= self.max_failures:
                    return
                until = time.time() + self.lockout
                await self._cache.set(lock, until, ttl=self.lockout)
                await self._cache.delete(failures)
        except Unavailable as error:
            logger.warning("login throttle not enforced, cache unavailable: %s", error)
            return
        raise _locked(float(until) - time.time())

    async def succeeded(self, domain: str, email: str) -> None:
        failures, _lock = self._keys(domain, email)
        try:
            await self._cache.delete(failures)
        except Unavailable as error:
            logger.warning("login failures not reset, cache unavailable: %s", error)


def _locked(seconds: float) -> RateLimited:
    seconds = max(seconds, 0.0)
    return RateLimited(
        "Too many failed sign-in attempts for this account; retry later.",
        retryAfter=max(1, math.ceil(seconds)),
        retryAfterSeconds=round(seconds, 3),
        scope="account",
    )


async def change_user_active(
    database: Any, guard: AccountGuard, tenant_id: uuid.UUID, user_id: uuid.UUID, active: bool
) -> Any:
    """(De)activate a user; deactivation also revokes every refresh family of theirs. The cache
    is told after the commit, so live tokens and subscriptions stop at once."""
    async with database.session() as session:
        user = await users_repo.set_user_active(
            session=session, tenant_id=tenant_id, user_id=user_id, is_active=active
        )
        if not active:
            await sessions_repo.revoke_user_families(
                session=session, tenant_id=tenant_id, user_id=user_id, reason="deactivated"
            )
    await guard.user_changed(tenant_id, user_id, active)
    return user


async def change_tenant_active(
    database: Any, guard: AccountGuard, tenant_id: uuid.UUID, active: bool
) -> Any:
    """(De)activate a tenant; its users' tokens and subscriptions follow at once."""
    async with database.session() as session:
        tenant = await tenants_repo.set_tenant_active(
            session=session, tenant_id=tenant_id, is_active=active
        )
    await guard.tenant_changed(tenant_id, active)
    return tenant
