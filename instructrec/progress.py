"""Progress bars for the long commands (replay, chaos, training, evaluation, bench): tqdm on
stderr, shown only when stderr is a terminal (logs and CI output stay clean)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    from tqdm import tqdm

    yield from tqdm(
        items, desc=desc, total=total, unit=unit, file=sys.stderr, disable=None, mininterval=0.5, dynamic_ncols=True
    )
