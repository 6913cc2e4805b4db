"""Driver errors become storage errors by what a caller can do about them."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError

from storage.db import translate_error
from storage.errors import Unavailable


class DriverError(Exception):
    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "message"),
    [
        ("57P03", "the database system is starting up"),
        ("57P01", "terminating connection due to administrator command"),
        ("08006", "connection failure"),
        ("53300", "sorry, too many clients already"),
    ],
)
def test_a_server_that_is_not_there_yet_or_any_more_is_unavailable(
    sqlstate: str, message: str
) -> None:
    wrapped = DBAPIError("SELECT 1", {}, DriverError(message, sqlstate))
    assert isinstance(translate_error(wrapped), Unavailable)
    assert isinstance(translate_error(DriverError(message, sqlstate)), Unavailable)


def test_a_syntax_error_is_not_unavailable() -> None:
    wrapped = DBAPIError("SELEC 1", {}, DriverError("syntax error", "42601"))
    assert not isinstance(translate_error(wrapped), Unavailable)
