"""The columnar path of ``recserve ingest file`` for interaction CSV files.

Parsing, checking and encoding a row one Python object at a time cost about 35 µs per row, so
a file import ran at 9k rows/s whatever the database did. Here pyarrow reads a batch of rows
as columns and every check of ``ingest.files._interaction`` runs on whole columns; the batch
becomes ``EventColumns`` without a Python object per row.

It is exact or it steps aside:
- A file where a quoted value may span lines takes the row path: line numbers in bad-row
  reports need one line per row (``scan``).
- A batch with any value the columnar checks do not accept (a value that is not a number, a
  time neither unix seconds nor an ISO-8601 form pyarrow reads, a too long or missing key) is
  parsed row by row by the row path's own parser: its bad rows are reported as the row path
  reports them.
- Blank lines are skipped and a line with too few or too many fields is reported, as the row
  path does (the scan for quotes also finds the blank lines, so every row keeps its line).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pyarrow import ArrowInvalid

from training.data import EventColumns, unix_microseconds

__all__ = ["ArrowInvalid", "EventBatch", "NotUtf8", "csv_event_batches", "scan"]

SCAN_BYTES = 1 << 22
BLOCK_BYTES = 1 << 22
# datetime's range, as the row path's ``datetime.fromtimestamp`` accepts it
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799


class NotUtf8(ValueError):
    """The file is not UTF-8 text somewhere after ``line`` (the last line read before)."""

    def __init__(self, line: int) -> None:
        super().__init__(f"not UTF-8 text (somewhere after line {line})")
        self.line = line


@dataclass
class EventBatch:
    """Interaction rows of a file as columns, with each row's line."""

    lines: np.ndarray
    events: EventColumns

    def __len__(self) -> int:
        return len(self.lines)

    def take(self, rows: np.ndarray) -> EventBatch:
        events = self.events
        return EventBatch(
            self.lines[rows],
            EventColumns(
                events.users,
                events.user_codes[rows],
                events.items,
                events.item_codes[rows],
                events.types,
                events.type_codes[rows],
                events.values[rows],
                events.times[rows],
            ),
        )


_BLANK_LINE = re.compile(rb"\n\r?(?=\n)")


def scan(path: Path) -> list[int] | None:
    """The numbers of the blank lines of a CSV file, or None if a quoted value may span lines
    (some line holds an odd number of double quotes; doubled quotes inside a value keep the
    count even): then a line may hold part of a row, and the row path reads the file. Blocks,
    not lines: several hundred MB/s."""
    blank: list[int] = []
    newlines_before = 0  # in the file before ``data``
    quotes_before = 0  # parity of the quotes before ``block``
    tail = b""
    with path.open("rb") as handle:
        while block := handle.read(SCAN_BYTES):
            if quotes_before or b'"' in block:
                raw = np.frombuffer(block, dtype=np.uint8)
                quotes = np.flatnonzero(raw == ord('"'))
                before_newlines = np.searchsorted(quotes, np.flatnonzero(raw == ord("\n")))
                if ((before_newlines + quotes_before) % 2).any():
                    return None
                quotes_before = (quotes_before + len(quotes)) % 2
            data = tail + block
            for match in _BLANK_LINE.finditer(data):
                if match.end() >= len(tail):  # not found in the previous block already
                    blank.append(newlines_before + data.count(b"\n", 0, match.start() + 1) + 1)
            keep = min(2, len(data))
            newlines_before += data.count(b"\n", 0, len(data) - keep)
            tail = data[len(data) - keep :]
    return blank


RowParser = Callable[[int, Mapping[str, Any]], tuple[int, Any] | None]


def csv_event_batches(
    path: Path,
    blank_lines: list[int],
    header: list[str],
    by_column: Mapping[str, str],
    limits: Mapping[str, int],
    default_type: str,
    bad: Callable[[int, str], None],
    parse_row: RowParser,
    batch_rows: int,
) -> Iterator[tuple[int, EventBatch | list[tuple[int, Any]]]]:
    """``(lines read, batch)`` per batch of a CSV file with one line per row (whose ``scan``
    found ``blank_lines``):
    an ``EventBatch``, or where a value needs the row path, the row path's parsed rows (from
    ``parse_row(line, {field: raw value})``, which reports its own bad rows).

    ``by_column`` maps the file's column names to fields (user, item, type, value, time);
    ``limits`` holds the longest user, item and type."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    width = len(header)
    skipped = list(blank_lines)  # lines that are no row: blank, too few or too many fields

    def invalid(row: Any) -> str:
        # pyarrow numbers the lines it does not skip: the blank lines before count too
        line = row.number
        while (physical := row.number + bisect.bisect_right(blank_lines, line)) != line:
            line = physical
        bad(line, f"expected {width} fields, found {row.actual_columns}")
        bisect.insort(skipped, line)
        return "skip"

    def unreadable(error: ArrowInvalid, line: int) -> Exception:
        # "CSV conversion error to string: invalid UTF8 data"
        return NotUtf8(line) if "UTF8" in str(error) else error

    try:  # reads the first block already
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=False, block_size=BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(ignore_empty_lines=True, invalid_row_handler=invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={column: pa.string() for column in header},
                include_columns=[column for column in header if column in by_column],
                strings_can_be_null=False,
            ),
        )
    except ArrowInvalid as error:
        raise unreadable(error, 1) from error
    next_line = 2  # line 1 is the header
    batches = iter(reader)
    while True:
        try:
            record_batch = next(batches)
        except StopIteration:
            return
        except ArrowInvalid as error:
            raise unreadable(error, next_line - 1) from error
        for start in range(0, record_batch.num_rows, batch_rows):
            piece = record_batch.slice(start, batch_rows)
            count = piece.num_rows
            # This piece's rows are the next ``count`` lines that are not skipped ones.
            first = bisect.bisect_left(skipped, next_line)
            gaps = 0
            while first + gaps < len(skipped) and skipped[first + gaps] < next_line + count + gaps:
                gaps += 1
            candidates = np.arange(next_line, next_line + count + gaps, dtype=np.int64)
            lines = candidates[~np.isin(candidates, skipped[first : first + gaps])]
            next_line += count + gaps
            columns = {by_column[name]: piece.column(name) for name in piece.column_names}
            yield count, _batch(columns, lines, limits, default_type, parse_row)


def _batch(
    columns: Mapping[str, Any],
    lines: np.ndarray,
    limits: Mapping[str, int],
    default_type: str,
    parse_row: RowParser,
) -> EventBatch | list[tuple[int, Any]]:
    import pyarrow.compute as pc

    count = len(lines)
    if not count:
        return []
    text = {name: pc.utf8_trim_whitespace(column) for name, column in columns.items()}
    lengths = {name: pc.utf8_length(values) for name, values in text.items()}
    events = _columns(text, lengths, count, limits, default_type)
    if events is None:  # some value needs the row path: it reports the bad ones
        raw = {name: values.to_pylist() for name, values in text.items()}
        parsed = []
        for index, line in enumerate(lines.tolist()):
            row = parse_row(line, {name: values[index] for name, values in raw.items()})
            if row is not None:
                parsed.append(row)
        return parsed
    return EventBatch(lines, events)


def _columns(
    text: Mapping[str, Any],
    lengths: Mapping[str, Any],
    count: int,
    limits: Mapping[str, int],
    default_type: str,
) -> EventColumns | None:
    """The batch as ``EventColumns``, or None if any row fails a check."""
    import pyarrow as pa
    import pyarrow.compute as pc

    empty = {name: pc.equal(length, 0) for name, length in lengths.items()}
    for name in ("user", "item"):
        if pc.any(empty[name]).as_py() or pc.max(lengths[name]).as_py() > limits[name]:
            return None
    if "type" in text:
        if pc.max(lengths["type"]).as_py() > limits["type"]:
            return None
        types = pc.if_else(empty["type"], default_type, text["type"])
    else:
        types = pa.array([default_type] * count)
    if "value" in text:
        try:
            values = pc.cast(pc.if_else(empty["value"], None, text["value"]), pa.float64())
        except pa.ArrowInvalid:
            return None
        numbers = values.to_numpy(zero_copy_only=False)
        if not np.isfinite(numbers[~np.isnan(numbers)]).all():
            return None
    else:
        numbers = np.full(count, np.nan)
    if pc.any(empty["time"]).as_py():
        return None
    times = _times(text["time"])
    if times is None:
        return None
    codes = {}
    for name, values in (("user", text["user"]), ("item", text["item"]), ("type", types)):
        encoded = pc.dictionary_encode(values)
        codes[name] = (
            encoded.dictionary.to_pylist(),
            encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64),
        )
    return EventColumns(
        codes["user"][0],
        codes["user"][1],
        codes["item"][0],
        codes["item"][1],
        codes["type"][0],
        codes["type"][1],
        numbers.astype(np.float64),
        times,
    )


def _times(values: Any) -> np.ndarray | None:
    """Unix seconds, else ISO-8601 with or without an offset (none means UTC), as int64
    microseconds; None if the column is not all of one such form."""
    import pyarrow as pa
    import pyarrow.compute as pc

    first = values[0].as_py() if len(values) else ""
    if "-" not in first[1:]:  # a number, or nothing the ISO casts would read
        try:
            seconds = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            return None
        if (
            np.isfinite(seconds).all()
            and ((seconds >= _MIN_SECONDS) & (seconds <= _MAX_SECONDS)).all()
        ):
            return unix_microseconds(seconds)
        return None
    for kind in (pa.timestamp("us", tz="UTC"), pa.timestamp("us")):
        try:
            stamps = pc.cast(values, kind)
        except pa.ArrowInvalid:
            continue
        return stamps.cast(pa.int64()).to_numpy(zero_copy_only=False)
    return None
