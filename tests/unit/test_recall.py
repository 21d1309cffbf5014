from hypothesis import given
from hypothesis import strategies as st

from model.recall import ItemGraph


def known(_: str) -> bool:
    return True


def test_neighbours_come_first_then_popular_and_seen_items_are_excluded():
    g = ItemGraph(window=2)
    g.rebuild([["a", "b", "c"], ["a", "b", "d"], ["x", "y"], ["y", "z"], ["y", "q"]])
    out = g.recall(["a"], exclude={"a"}, limit=4, is_known=known)
    ids = [r.item_id for r in out]
    assert ids[0] == "b" and out[0].source == "cooccurrence"
    assert "a" not in ids
    assert len(ids) == len(set(ids)) == 4
    assert any(r.source == "popular" for r in out)
    assert "y" in ids  # the most popular unseen item fills the popular share


def test_unknown_items_are_never_recalled():
    g = ItemGraph()
    g.rebuild([["a", "b", "ghost"], ["ghost", "b"]])
    out = g.recall(["a"], exclude=set(), limit=10, is_known=lambda i: i != "ghost")
    assert "ghost" not in {r.item_id for r in out}


def test_cold_start_falls_back_to_popular_then_fresh():
    g = ItemGraph()
    g.rebuild([["p1", "p2"], ["p1"]])
    out = g.recall([], exclude=set(), limit=4, is_known=known, fresh=["f9", "p1", "f8"])
    assert [(r.item_id, r.source) for r in out] == [
        ("p1", "popular"),
        ("p2", "popular"),
        ("f9", "fresh"),
        ("f8", "fresh"),
    ]


def test_recall_is_deterministic():
    g = ItemGraph()
    g.rebuild([["a", "b"], ["a", "c"], ["d", "e"]])
    assert g.recall(["a"], set(), 5, known) == g.recall(["a"], set(), 5, known)


contexts = st.lists(st.lists(st.sampled_from("abcdefghij"), max_size=12), max_size=8)


@given(contexts, contexts)
def test_incremental_updates_equal_a_rebuild(before, after):
    n = min(len(before), len(after))
    g = ItemGraph(window=3)
    g.rebuild(before)
    for old, new in zip(before[:n], after[:n], strict=True):
        g.replace_user(old, new)
    expected = ItemGraph(window=3)
    expected.rebuild(after[:n] + before[n:])
    assert g.popularity == expected.popularity
    assert {k: v for k, v in g.neighbours.items() if v} == {k: v for k, v in expected.neighbours.items() if v}


@given(
    st.lists(st.sampled_from("abcdefgh"), max_size=15),
    st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=6),
    st.integers(1, 15),
    st.lists(st.lists(st.sampled_from("abcdefgh"), max_size=10), max_size=4),
)
def test_sliding_a_context_window_updates_only_its_ends_and_equals_a_rebuild(old, appended, limit, others):
    new = (old + appended)[-limit:]
    old = old[-limit:]
    g = ItemGraph(window=3)
    g.rebuild([old, *others])
    g.replace_user(old, new, max_shift=len(appended))
    expected = ItemGraph(window=3)
    expected.rebuild([new, *others])
    assert g.popularity == expected.popularity
    assert {k: v for k, v in g.neighbours.items() if v} == {k: v for k, v in expected.neighbours.items() if v}
