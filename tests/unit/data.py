"""Hand-made data shared by the unit tests."""

from __future__ import annotations

from model.data import Dataset, Interaction, Item


def dataset_of(rows: list[tuple[str, str, float]]) -> Dataset:
    """(user, item, ts) rows in file order, as ``load_ml100k`` would give them: sorted by
    time with file order breaking ties; every item a 1990 drama."""
    interactions = [Interaction(u, i, 5.0, ts, n) for n, (u, i, ts) in enumerate(rows)]
    interactions.sort(key=lambda x: (x.ts, x.order))
    items = {i: Item(i, f"T{i}", "1990", ("Drama",)) for _, i, _ in rows}
    return Dataset(interactions, items, {u for u, _, _ in rows})
