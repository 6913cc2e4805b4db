"""MovieLens loaders: 100K (tab/pipe files), 1M (``::`` .dat files), latest-small (CSV).

Each loader returns explicit-rating rows ``(user_id, item_id, rating, unix_time)`` and one
:class:`ItemInfo` per movie: the first genre is its category, all genres are its tags, and the
release year goes into the description (``MovieLens.years`` keeps it as a number).
A named dataset missing from the cache is downloaded from GroupLens; offline that is a clear
:class:`DatasetUnavailable`, never a hang (the request has a timeout).
"""

from __future__ import annotations

import csv
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from storage.errors import Unavailable
from training.data import ItemInfo

GROUPLENS = "https://files.grouplens.org/datasets/movielens"
URLS = {name: f"{GROUPLENS}/{name}.zip" for name in ("ml-100k", "ml-1m", "ml-latest-small")}
RatingRow = tuple[str, str, float, float]
_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


class DatasetUnavailable(Unavailable):
    """The dataset is neither on disk nor downloadable right now."""


@dataclass
class MovieLens:
    name: str
    rows: list[RatingRow]
    items: list[ItemInfo]
    years: dict[str, int | None] = field(default_factory=dict)


def _year(title: str, date: str = "") -> int | None:
    match = _YEAR_IN_TITLE.search(title) or re.search(r"(\d{4})\s*$", date)
    return int(match.group(1)) if match else None


def _item(movie_id: str, title: str, genres: list[str], year: int | None) -> ItemInfo:
    genres = [g for g in genres if g and g not in ("unknown", "(no genres listed)")]
    released = f"Released {year}. " if year else ""
    return ItemInfo(
        id=movie_id,
        title=title,
        description=f"{released}{', '.join(genres)}".strip(),
        category=genres[0] if genres else None,
        tags=tuple(genres),
    )


def read_ml100k_ratings(path: str | Path) -> list[RatingRow]:
    """``u.data`` or a ``uN.base``/``uN.test`` fold: user, item, rating, timestamp; tabs."""
    rows = []
    with open(path, encoding="latin-1") as handle:
        for line in handle:
            if line.strip():
                user, item, rating, ts = line.split("\t")
                rows.append((user, item, float(rating), float(ts)))
    return rows


def read_ml100k_items(root: str | Path) -> list[ItemInfo]:
    root = Path(root)
    genre_names = {}
    for line in (root / "u.genre").read_text(encoding="latin-1").splitlines():
        if line.strip():
            name, index = line.rsplit("|", 1)
            genre_names[int(index)] = name
    items = []
    for line in (root / "u.item").read_text(encoding="latin-1").splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        flags = fields[5:]
        genres = [genre_names[i] for i, flag in enumerate(flags) if flag.strip() == "1"]
        items.append(_item(fields[0], fields[1], genres, _year(fields[1], fields[2])))
    return items


def load_ml100k(root: str | Path) -> MovieLens:
    root = Path(root)
    items = read_ml100k_items(root)
    years = {it.id: _year(it.title, it.description) for it in items}
    return MovieLens("ml-100k", read_ml100k_ratings(root / "u.data"), items, years)


def load_ml1m(root: str | Path) -> MovieLens:
    root = Path(root)
    rows = []
    for line in (root / "ratings.dat").read_text(encoding="latin-1").splitlines():
        if line.strip():
            user, item, rating, ts = line.split("::")
            rows.append((user, item, float(rating), float(ts)))
    items, years = [], {}
    for line in (root / "movies.dat").read_text(encoding="latin-1").splitlines():
        if line.strip():
            movie_id, title, genres = line.split("::")
            years[movie_id] = _year(title)
            items.append(_item(movie_id, title, genres.split("|"), years[movie_id]))
    return MovieLens("ml-1m", rows, items, years)


def load_latest_small(root: str | Path) -> MovieLens:
    root = Path(root)
    with open(root / "ratings.csv", encoding="utf-8", newline="") as handle:
        rows = [
            (r["userId"], r["movieId"], float(r["rating"]), float(r["timestamp"]))
            for r in csv.DictReader(handle)
        ]
    items, years = [], {}
    with open(root / "movies.csv", encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle):
            movie_id, title = record["movieId"], record["title"].strip()
            years[movie_id] = _year(title)
            items.append(_item(movie_id, title, record["genres"].split("|"), years[movie_id]))
    return MovieLens("ml-latest-small", rows, items, years)


def _detect(root: Path) -> MovieLens:
    if (root / "u.data").exists():
        return load_ml100k(root)
    if (root / "ratings.dat").exists():
        return load_ml1m(root)
    if (root / "ratings.csv").exists():
        return load_latest_small(root)
    raise DatasetUnavailable(f"{root} holds no MovieLens files (u.data, ratings.dat, ratings.csv)")


def download(name: str, cache_dir: Path, *, timeout: float = 30.0) -> Path:
    """Fetch ``{name}.zip`` from GroupLens and unpack it to ``cache_dir/name``."""
    if name not in URLS:
        raise DatasetUnavailable(f"unknown MovieLens dataset {name!r}; known: {sorted(URLS)}")
    target = cache_dir / name
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            archive = Path(tmp) / f"{name}.zip"
            with urllib.request.urlopen(URLS[name], timeout=timeout) as response:
                archive.write_bytes(response.read())
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(tmp)
            # Unpack next to the cache and move in one step: a failed download leaves no half folder
            shutil.move(str(Path(tmp) / name), str(target))
    except (urllib.error.URLError, OSError, zipfile.BadZipFile) as exc:
        raise DatasetUnavailable(
            f"could not download {URLS[name]} ({exc}); offline? put the extracted folder at "
            f"{target} or pass its path"
        ) from exc
    return target


def load_movielens(
    source: str | Path = "ml-100k",
    *,
    cache_dir: str | Path | None = None,
    download_missing: bool = True,
) -> MovieLens:
    """Load from a folder path, or by name from ``cache_dir`` (downloading it when missing)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _detect(path)
    name = str(source)
    if name not in URLS:
        raise DatasetUnavailable(f"{source} is neither a folder nor one of {sorted(URLS)}")
    if cache_dir is None:
        from storage.settings import get_settings

        cache_dir = get_settings().data_dir / "datasets"
    cached = Path(cache_dir) / name
    if cached.is_dir():
        return _detect(cached)
    if not download_missing:
        raise DatasetUnavailable(f"{name} is not in {cache_dir} and downloading is disabled")
    return _detect(download(name, Path(cache_dir)))
