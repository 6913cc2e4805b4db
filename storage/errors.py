"""The storage layer's exception tree.

Every backend (SQL, cache, vector store, artifact store) raises only these, so callers above
storage never see driver exceptions. Only the API edge turns them into GraphQL errors::

    StorageError
    ├── NotFound        the addressed row / key / version does not exist (for this tenant)
    ├── Conflict        a uniqueness rule was broken (duplicate email, domain, idempotency key)
    ├── InvalidData     a value breaks a rule of the data model (rating out of range, bad id)
    └── Unavailable     the backend could not be reached or timed out; retrying may help
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error raised by ``storage``."""


class NotFound(StorageError):
    """The addressed object does not exist, or belongs to another tenant."""


class Conflict(StorageError):
    """The write would break a uniqueness rule."""


class InvalidData(StorageError):
    """A value breaks a rule of the data model."""


class Unavailable(StorageError):
    """The backend could not be reached, or did not answer in time."""
