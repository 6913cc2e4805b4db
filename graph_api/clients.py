"""Which address a request comes from, for the per-IP rate limit.

``X-Forwarded-For`` is written by whoever sent the request, so it is believed only when the
socket peer is one of the configured proxies (``RECSERVE_TRUSTED_PROXIES``, IPs or CIDRs;
empty by default). Then the header is read from the right, skipping the trusted hops: the first
address that is not a proxy of ours is the client. Anything in the header that is not an IP
address ends the walk, so a forged or garbled header can only name one of our own proxies.
The server in front must not rewrite the peer itself (uvicorn's proxy-header handling is off:
``FORWARDED_ALLOW_IPS`` is empty, see ``cluster.serving``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN = "unknown"


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


class ClientAddresses:
    def __init__(self, trusted_proxies: Sequence[str] = ()) -> None:
        self._trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies
        )

    def _is_proxy(self, address: Address) -> bool:
        return any(address in network for network in self._trusted)

    def resolve(self, peer: str | None, forwarded_for: Iterable[str]) -> str:
        """The client's address as a normalised IP string (``unknown`` without a peer)."""
        current = _address(peer) if peer else None
        if current is None:
            return UNKNOWN
        hops = [hop for value in forwarded_for for hop in value.split(",")]
        while self._is_proxy(current) and hops:
            previous = _address(hops.pop())
            if previous is None:
                break  # garbage: nothing further left can be believed
            current = previous
        return str(current)

    def of(self, connection: Any) -> str:
        """The address of a Starlette request or websocket."""
        client = getattr(connection, "client", None)
        headers = getattr(connection, "headers", None)
        forwarded = headers.getlist("x-forwarded-for") if headers is not None else []
        return self.resolve(client.host if client is not None else None, forwarded)
