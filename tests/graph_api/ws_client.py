"""A real graphql-transport-ws client over the ``websockets`` package, and a live uvicorn server.

Tests and the realtime benchmark use these instead of the ASGI test client's websocket shortcut,
so the handshake, subprotocol negotiation and close codes are the ones a browser would see.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import uvicorn
import websockets
from fastapi import FastAPI

PROTOCOL = "graphql-transport-ws"


class GraphQLSocket:
    """One acknowledged connection; subscriptions are told apart by their operation id."""

    def __init__(self, connection: websockets.ClientConnection) -> None:
        self.connection = connection
        self._next_id = 0

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        self._next_id += 1
        operation = str(self._next_id)
        payload = {"query": query, "variables": variables or {}}
        await self._send({"id": operation, "type": "subscribe", "payload": payload})
        return operation

    async def complete(self, operation: str) -> None:
        await self._send({"id": operation, "type": "complete"})

    async def receive(self, wait_s: float = 5.0) -> dict[str, Any]:
        """The next ``next`` / ``error`` / ``complete`` message (pings are answered here)."""
        while True:
            message = orjson.loads(await asyncio.wait_for(self.connection.recv(), wait_s))
            if message["type"] == "ping":
                await self._send({"type": "pong"})
            elif message["type"] != "pong":
                return message

    async def next_data(self, wait_s: float = 5.0) -> dict[str, Any]:
        """The data of the next ``next`` message; fails on errors or an early end."""
        message = await self.receive(wait_s)
        assert message["type"] == "next", message
        assert "errors" not in message["payload"], message["payload"]
        return message["payload"]["data"]

    async def nothing_within(self, seconds: float) -> bool:
        """True when no message arrives within ``seconds``."""
        try:
            await self.receive(wait_s=seconds)
        except TimeoutError:
            return True
        return False

    async def _send(self, message: dict[str, Any]) -> None:
        await self.connection.send(orjson.dumps(message).decode())


@asynccontextmanager
async def graphql_socket(url: str, token: str | None) -> AsyncIterator[GraphQLSocket]:
    """Connect, send ``connection_init`` (token in its payload) and wait for the ack."""
    async with websockets.connect(url, subprotocols=[PROTOCOL], open_timeout=30) as connection:
        payload = {"Authorization": f"Bearer {token}"} if token else {}
        await connection.send(
            orjson.dumps({"type": "connection_init", "payload": payload}).decode()
        )
        ack = orjson.loads(await asyncio.wait_for(connection.recv(), 10))
        assert ack["type"] == "connection_ack", ack
        yield GraphQLSocket(connection)


async def refused_close_code(url: str, token: str) -> int | None:
    """The close code the server answers a ``connection_init`` with ``token`` (None if acked)."""
    async with websockets.connect(url, subprotocols=[PROTOCOL], open_timeout=30) as connection:
        payload = {"Authorization": f"Bearer {token}"}
        await connection.send(
            orjson.dumps({"type": "connection_init", "payload": payload}).decode()
        )
        try:
            message = orjson.loads(await asyncio.wait_for(connection.recv(), 10))
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None
        assert message["type"] != "connection_ack", "an invalid token was acknowledged"
        return None


@asynccontextmanager
async def live_server(app: FastAPI, *, lifespan: str = "off") -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free local port; yields ``host:port``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan=lifespan, log_level="warning", ws="websockets-sansio")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()
