"""Structured JSON logs: one object per line with the request's id, tenant, operation and trace.

The GraphQL edge fills the request fields (``bind_request``); every log record made while that
request runs, in any module, carries them. ``RECSERVE_LOG_FORMAT=json`` turns it on for a process.
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from storage.tracing import current_trace_id

FORMAT_ENV = "RECSERVE_LOG_FORMAT"
_request: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "recserve_request", default=None
)


@contextmanager
def bind_request(**fields: object) -> Iterator[None]:
    """Attach request fields (``request_id``, ``tenant_id``, ``operation``) to logs made inside."""
    merged = {**(_request.get() or {}), **{k: str(v) for k, v in fields.items() if v is not None}}
    token = _request.set(merged)
    try:
        yield
    finally:
        _request.reset(token)


def update_request(**fields: object) -> None:
    """Add fields learned mid-request (the tenant, once the token is verified)."""
    current = _request.get()
    if current is not None:
        current.update({k: str(v) for k, v in fields.items() if v is not None})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_request.get() or {})
        trace_id = current_trace_id()
        if trace_id is not None:
            entry["trace_id"] = trace_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: int = logging.INFO, *, force: bool = False) -> bool:
    """JSON lines on the root logger when ``RECSERVE_LOG_FORMAT=json`` (or ``force``)."""
    if not force and os.environ.get(FORMAT_ENV, "").lower() != "json":
        return False
    root = logging.getLogger()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root.handlers = [h for h in root.handlers if not isinstance(h.formatter, JsonFormatter)]
    root.addHandler(handler)
    root.setLevel(level)
    return True
