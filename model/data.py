"""ml-100k, taken from the ``recbole==1.2.1`` wheel at set-up time (never committed).

``python -m model.data fetch [DATA_DIR]`` downloads the wheel with pip (no deps) and
extracts ``recbole/dataset_example/ml-100k/`` into ``DATA_DIR/ml-100k``. Interactions are
ordered by timestamp, ties broken by file order (many ratings share a timestamp).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from model.exceptions import DataNotFound

RECBOLE_SPEC = "recbole==1.2.1"
WHEEL_PREFIX = "recbole/dataset_example/ml-100k/"
FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")


@dataclass(frozen=True)
class Interaction:
    user_id: str
    item_id: str
    rating: float
    ts: float
    order: int  # position in the original file, the tie-breaker


@dataclass(frozen=True)
class Item:
    item_id: str
    title: str
    year: str
    genres: tuple[str, ...]


@dataclass
class Dataset:
    interactions: list[Interaction]
    items: dict[str, Item]
    users: set[str] = field(default_factory=set)


def dataset_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "ml-100k"


def fetch_ml100k(data_dir: Path) -> Path:
    """Make sure ml-100k is under ``data_dir``; download the wheel with pip if not."""
    target = dataset_dir(data_dir)
    if all((target / name).exists() for name in FILES):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", RECBOLE_SPEC, "-d", tmp],
            check=True,
        )
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if not wheels:
            raise DataNotFound(f"pip did not produce a {RECBOLE_SPEC} wheel")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in FILES:
                (target / name).write_bytes(wheel.read(WHEEL_PREFIX + name))
    return target


def _rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        next(fh)  # header: name:type columns
        return [line.rstrip("\n").split("\t") for line in fh if line.strip()]


def load_ml100k(data_dir: Path) -> Dataset:
    root = dataset_dir(data_dir)
    if not (root / "ml-100k.inter").exists():
        raise DataNotFound(f"ml-100k not found under {root}; run `make data`")
    interactions = [
        Interaction(user_id=u, item_id=i, rating=float(r), ts=float(t), order=n)
        for n, (u, i, r, t) in enumerate(_rows(root / "ml-100k.inter"))
    ]
    interactions.sort(key=lambda x: (x.ts, x.order))  # stable: file order breaks ties
    items = {}
    for row in _rows(root / "ml-100k.item"):
        item_id, title, year, genres = ([*row, "", "", "", ""])[:4]
        items[item_id] = Item(item_id, title.strip(), year.strip(), tuple(genres.split()))
    return Dataset(interactions, items, {x.user_id for x in interactions})


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] != "fetch":
        sys.exit("usage: python -m model.data fetch [DATA_DIR]")
    from instructrec.settings import Settings

    out = fetch_ml100k(Path(args[1]) if len(args) > 1 else Settings().data_dir)
    print(f"ml-100k ready in {out}")
