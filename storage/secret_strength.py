"""Is a production secret a real one? Placeholders and guessable strings are refused.

A length check alone let ``change-me-to-64-random-characters`` (the value in
``cluster/k8s/secrets.example.yaml``) sign production tokens. A secret is refused when it
contains a placeholder word, or when its estimated entropy is low: few distinct characters,
a repeated pattern or run (``abcdef…``), or under ``MIN_ENTROPY_BITS`` by a per-character
Shannon estimate (a generous upper bound for human-made strings, a fair one for generated
ones: ``secrets.token_urlsafe(32)`` scores ~200 bits, ``openssl rand -hex 16`` 98-125, so a
real 128-bit hex secret always passes).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from itertools import pairwise
from urllib.parse import urlsplit

MIN_CHARS = 32
MIN_DISTINCT_CHARS = 8
MIN_ENTROPY_BITS = 90
# Adjacent characters one code point apart (or equal) in more than this share: a keyboard walk.
MAX_SEQUENTIAL_SHARE = 0.6
# Compared after lower-casing and dropping everything but letters and digits.
PLACEHOLDER_WORDS = (
    "changeme",
    "replaceme",
    "placeholder",
    "example",
    "yoursecret",
    "secretkey",
    "mysecret",
    "supersecret",
    "insecure",
    "dummy",
    "default",
    "password",
    "passw0rd",
    "letmein",
    "randomcharacters",
    "todo",
    "fixme",
    "xxxxxx",
)
# Whole values that are placeholders however short (database and Redis passwords).
PLACEHOLDER_VALUES = frozenset({"secret", "changeit", "admin", "root", "test", "postgres", "redis"})


def _normalised(value: str) -> str:
    return re.sub(r"[^a-z0-9]", "", value.lower())


def is_placeholder(value: str) -> bool:
    plain = _normalised(value)
    return plain in PLACEHOLDER_VALUES or any(word in plain for word in PLACEHOLDER_WORDS)


def entropy_bits(value: str) -> float:
    """Length times the Shannon entropy of the value's own character frequencies."""
    counts = Counter(value)
    total = len(value)
    return -total * sum(n / total * math.log2(n / total) for n in counts.values())


def _is_repetition(value: str) -> bool:
    """``abcabcabc…``: a short unit repeated (a rotation test finds any period)."""
    return len(value) > 1 and (value + value).find(value, 1) < len(value)


def _is_sequential(value: str) -> bool:
    steps = [abs(ord(b) - ord(a)) <= 1 for a, b in pairwise(value)]
    return sum(steps) > MAX_SEQUENTIAL_SHARE * len(steps)


def weakness(value: str) -> str | None:
    """Why ``value`` is not a usable production secret, or None when it is."""
    if len(value) < MIN_CHARS:
        return f"shorter than {MIN_CHARS} characters"
    if is_placeholder(value):
        return "a placeholder (copied from an example?)"
    if len(set(value)) < MIN_DISTINCT_CHARS or _is_repetition(value) or _is_sequential(value):
        return "a repeated pattern"
    if entropy_bits(value) < MIN_ENTROPY_BITS:
        return f"guessable (under {MIN_ENTROPY_BITS} bits of estimated entropy)"
    return None


def url_password(url: str | None) -> str | None:
    """The password part of a database or Redis URL, if any."""
    if not url:
        return None
    try:
        return urlsplit(url).password
    except ValueError:
        return None
