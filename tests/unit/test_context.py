from hypothesis import given
from hypothesis import strategies as st

from model.context import apply_events, items_of, recent_distinct


def test_context_keeps_last_n_in_time_order():
    ctx = apply_events(None, [(str(i), "click", float(i)) for i in range(10)], limit=4)
    assert items_of(ctx) == ["6", "7", "8", "9"]


def test_redelivered_event_is_applied_once():
    ctx = apply_events(None, [("a", "click", 1.0), ("b", "view", 2.0)], limit=10)
    again = apply_events(ctx, [("b", "view", 2.0), ("a", "click", 1.0)], limit=10)
    assert again == ctx


def test_late_event_is_inserted_at_its_time():
    ctx = apply_events(None, [("a", "click", 1.0), ("c", "click", 3.0)], limit=10)
    ctx = apply_events(ctx, [("b", "view", 2.0)], limit=10)
    assert items_of(ctx) == ["a", "b", "c"]


def test_input_context_is_not_mutated():
    ctx = [["a", "click", 1.0]]
    apply_events(ctx, [("b", "click", 2.0)], limit=1)
    assert ctx == [["a", "click", 1.0]]


def test_recent_distinct_is_most_recent_first_without_repeats():
    ctx = apply_events(None, [("a", "click", 1.0), ("b", "click", 2.0), ("a", "view", 3.0)], limit=10)
    assert [e[0] for e in recent_distinct(ctx, 5)] == ["a", "b"]
    assert recent_distinct(None, 5) == []


events = st.lists(
    st.tuples(st.sampled_from("abcdefg"), st.sampled_from(["click", "view"]), st.integers(0, 50).map(float)),
    max_size=80,
)


@given(events, st.integers(1, 20))
def test_context_is_bounded_sorted_and_duplicate_free(evs, limit):
    ctx = apply_events(None, evs, limit)
    assert len(ctx) <= limit
    assert [e[2] for e in ctx] == sorted(e[2] for e in ctx)
    assert len({tuple(e) for e in ctx}) == len(ctx)
    assert {tuple(e) for e in ctx} <= set(evs)


distinct_events = st.lists(
    st.tuples(st.sampled_from("abcdefg"), st.sampled_from(["click", "view"]), st.integers(0, 50).map(float)),
    max_size=80,
    unique=True,
)


@given(distinct_events, st.integers(1, 20))
def test_one_at_a_time_equals_all_at_once(evs, limit):
    step = None
    for ev in evs:
        step = apply_events(step, [ev], limit)
    assert (step or []) == apply_events(None, evs, limit)


def test_seen_items_outlive_the_event_window_but_stay_bounded():
    from model.context import UserContext

    value = None
    for i in range(10):
        value = UserContext.apply(value, [(str(i), "view", float(i))], limit=3, seen_limit=6)
    assert [e[0] for e in UserContext.events(value)] == ["7", "8", "9"]
    assert UserContext.seen(value) == ["4", "5", "6", "7", "8", "9"]
    again = UserContext.apply(value, [("9", "view", 9.0)], limit=3, seen_limit=6)
    assert again == value


def test_answered_requests_are_remembered_bounded_and_kept_across_event_updates():
    from model.context import UserContext

    value = UserContext.mark_answered(None, "r1")
    assert UserContext.was_answered(value, "r1") and not UserContext.was_answered(value, "r2")
    value = UserContext.apply(value, [("a", "click", 1.0)], limit=5, seen_limit=5)
    assert UserContext.was_answered(value, "r1")
    for i in range(40):
        value = UserContext.mark_answered(value, f"x{i}", keep=32)
    assert not UserContext.was_answered(value, "r1") and len(value["answered"]) == 32


def test_reflects_tells_apart_events_that_share_a_timestamp():
    from model.context import UserContext

    value = UserContext.apply(None, [("a", "click", 5.0)], limit=5, seen_limit=5)
    assert UserContext.reflects(value, 5.0) and UserContext.reflects(value, 4.0)
    assert UserContext.reflects(value, 5.0, "a")
    assert not UserContext.reflects(value, 5.0, "b")  # same second, later event not applied yet
    assert not UserContext.reflects(value, 6.0) and not UserContext.reflects(None, 1.0)
    value = UserContext.apply(value, [("b", "view", 5.0)], limit=5, seen_limit=5)
    assert UserContext.reflects(value, 5.0, "b")


def _plain_apply(context, events, limit):
    """The definition, written the slow and obvious way: every event checked against a
    set of everything held, then a stable sort by time."""
    out = [list(e) for e in context or ()][-limit:]
    for ev in events:
        held = {tuple(e) for e in out}
        full_and_older = len(out) >= limit and ev[2] <= out[0][2]
        if tuple(ev) not in held and not full_and_older:
            out.append(list(ev))
            out.sort(key=lambda e: e[2])
            out = out[-limit:]
    return out


@given(events, st.integers(1, 20), st.data())
def test_replaying_any_suffix_changes_nothing(evs, limit, data):
    """A partition replayed from an older offset after a crash (events with many equal
    timestamps, as in ml-100k) leaves every context as it was."""
    ctx = apply_events(None, evs, limit)
    start = data.draw(st.integers(0, len(evs)))
    assert apply_events(ctx, evs[start:], limit) == ctx
    halfway = data.draw(st.integers(0, len(evs)))
    resumed = apply_events(apply_events(None, evs[:halfway], limit), evs[max(0, halfway - 7) :], limit)
    assert resumed == ctx


@given(events, events, st.integers(1, 20))
def test_fast_path_matches_the_plain_definition(before, evs, limit):
    ctx = _plain_apply(None, before, 30)
    assert apply_events(ctx, evs, limit) == _plain_apply(ctx, evs, limit)
