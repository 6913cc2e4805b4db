"""Limits on stored JSON (item metadata) that every writer applies: the API (``graph_api.bounds``)
and the file importer (``ingest.files``) alike."""

from __future__ import annotations

from typing import Any

# Item metadata: its compact JSON encoding at most this many bytes, nested at most this deep.
METADATA_BYTES = 16 * 1024
JSON_DEPTH = 16


def json_depth(value: Any) -> int:
    """Nesting depth of a JSON value (a scalar is 0), without recursion."""
    depth, level = 0, [value]
    while level:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            break
        depth += 1
        level = [c for v in containers for c in (v.values() if isinstance(v, dict) else v)]
    return depth
