"""JWT access/refresh tokens and argon2 password hashing.

The tenant, user and role of a request come only from a token verified here: the algorithm is
pinned from settings (``algorithms=[pinned]``), so ``alg: none`` or a token signed with any other
key or algorithm is refused, as is one missing ``exp``/``iat``/``type`` or of the wrong type.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from graph_api.errors import Unauthenticated
from storage.settings import Settings

TokenType = Literal["access", "refresh"]
ISSUER = "recserve"
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "tid", "role", "type", "iss"]
# Access tokens already verified, with their expiry: a client sends the same token with every
# request for its lifetime, and checking the signature and claims again cost more than the rest
# of a cached answer's auth. Only successes are kept; expiry is checked on every use.
VERIFIED_TOKENS = 4096

_hasher = PasswordHasher()
# Verifying against a real hash when the email is unknown keeps login time the same for known
# and unknown accounts, so response timing does not reveal which emails exist.
_DUMMY_HASH = _hasher.hash("recserve-timing-equaliser")


@dataclass(frozen=True)
class Principal:
    """Who is calling: always taken from a verified token, never from client input."""

    tenant_id: uuid.UUID
    user_id: uuid.UUID
    role: str
    tier: str = "basic"
    # The refresh family (login) the token belongs to; None for operator-issued tokens.
    session_id: uuid.UUID | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


async def hash_password(password: str) -> str:
    # argon2 is deliberately slow (tens of ms): keep it off the event loop.
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


class TokenService:
    """Issues and verifies tokens with the one secret and algorithm from settings."""

    def __init__(self, settings: Settings) -> None:
        assert settings.jwt_secret is not None  # Settings fills a dev secret when unset
        self._secret = settings.jwt_secret.get_secret_value()
        self._algorithm = settings.jwt_algorithm
        self._lifetimes: dict[TokenType, timedelta] = {
            "access": timedelta(minutes=settings.access_token_minutes),
            "refresh": timedelta(days=settings.refresh_token_days),
        }
        self._verified: OrderedDict[str, tuple[Principal, str, float]] = OrderedDict()

    @property
    def access_lifetime(self) -> timedelta:
        return self._lifetimes["access"]

    @property
    def refresh_lifetime(self) -> timedelta:
        return self._lifetimes["refresh"]

    def issue(self, principal: Principal, token_type: TokenType, jti: str | None = None) -> str:
        """A signed token; a refresh token's ``jti`` is the one its family expects next."""
        now = datetime.now(UTC)
        claims: dict[str, object] = {
            "sub": str(principal.user_id),
            "tid": str(principal.tenant_id),
            "role": principal.role,
            "tier": principal.tier,
            "type": token_type,
            "iss": ISSUER,
            "iat": now,
            "exp": now + self._lifetimes[token_type],
            "jti": jti or uuid.uuid4().hex,
        }
        if principal.session_id is not None:
            claims["sid"] = str(principal.session_id)
        return jwt.encode(claims, self._secret, algorithm=self._algorithm)

    def verify(self, token: str, expected_type: TokenType = "access") -> Principal:
        return self._verify(token, expected_type)[0]

    def verify_refresh(self, token: str) -> tuple[Principal, str]:
        """The principal (with its family as ``session_id``) and ``jti`` of a refresh token.

        A refresh token without a family (issued before rotation existed) is refused.
        """
        principal, jti = self._verify(token, "refresh")
        if principal.session_id is None or not jti:
            raise Unauthenticated("Invalid token.")
        return principal, jti

    def _verify(self, token: str, expected_type: TokenType) -> tuple[Principal, str]:
        if expected_type == "access" and (known := self._verified.get(token)) is not None:
            principal, jti, expires_at = known
            if time.time() < expires_at:
                self._verified.move_to_end(token)
                return principal, jti
            del self._verified[token]
        principal, jti, expires_at = self._decode(token, expected_type)
        if expected_type == "access":
            self._verified[token] = (principal, jti, expires_at)
            if len(self._verified) > VERIFIED_TOKENS:
                self._verified.popitem(last=False)
        return principal, jti

    def _decode(self, token: str, expected_type: TokenType) -> tuple[Principal, str, float]:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[self._algorithm],
                issuer=ISSUER,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as error:
            raise Unauthenticated("Token has expired.") from error
        except jwt.PyJWTError as error:
            raise Unauthenticated("Invalid token.") from error
        if claims["type"] != expected_type:
            raise Unauthenticated(f"An {expected_type} token is required.")
        try:
            session = claims.get("sid")
            principal = Principal(
                tenant_id=uuid.UUID(claims["tid"]),
                user_id=uuid.UUID(claims["sub"]),
                role=str(claims["role"]),
                tier=str(claims.get("tier", "basic")),
                session_id=uuid.UUID(session) if session is not None else None,
            )
            return principal, str(claims.get("jti") or ""), float(claims["exp"])
        except (ValueError, TypeError, AttributeError) as error:
            raise Unauthenticated("Invalid token.") from error


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None when absent."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization header must be 'Bearer <token>'.")
    return token.strip()
