from pathlib import Path

from instructrec.replay import ReplayConfig, catalog_records, plan
from instructrec.results import percentile
from model.data import load_ml100k
from schemas.records import Event, Trigger


def write_fake(tmp: Path) -> Path:
    root = tmp / "ml-100k"
    root.mkdir()
    (root / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t5\t300\n2\t11\t2\t100\n1\t12\t4\t100\n3\t10\t3\t200\n"
    )
    (root / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tAlien\t1979\tHorror Sci-Fi\n11\tHeat\t1995\tAction\n12\tBabe\t1995\tComedy\n"
    )
    (root / "ml-100k.user").write_text("user_id:token\n1\n2\n3\n")
    return tmp


def test_interactions_are_time_ordered_with_file_order_breaking_ties(tmp_path):
    ds = load_ml100k(write_fake(tmp_path))
    assert [(x.user_id, x.item_id) for x in ds.interactions] == [("2", "11"), ("1", "12"), ("3", "10"), ("1", "10")]
    assert ds.items["10"].genres == ("Horror", "Sci-Fi")


def test_catalog_records_carry_title_year_and_genres(tmp_path):
    ds = load_ml100k(write_fake(tmp_path))
    alien = next(r for r in catalog_records(ds) if r.item_id == "10")
    assert alien.scoring_text() == "Alien (1979). Horror, Sci-Fi"


def test_replay_plan_mixes_events_and_triggers(tmp_path):
    ds = load_ml100k(write_fake(tmp_path))
    out = list(plan(ds, ReplayConfig(trigger_every=1, min_history=2, cold_start_every=0), clock=lambda: 5.0))
    events = [r for r in out if isinstance(r, Event)]
    triggers = [r for r in out if isinstance(r, Trigger)]
    assert len(events) == 4
    assert events[0].event_type == "view" and events[1].event_type == "click"  # rating 2 -> view, 4 -> click
    assert [t.user_id for t in triggers] == ["1"]  # only user 1 reaches two events
    assert out.index(triggers[0]) == 4  # right after the user's second event


def test_real_replay_plan_has_cold_start_intention_and_candidate_triggers():
    from instructrec.settings import Settings

    ds = load_ml100k(Settings().data_dir)
    triggers = [r for r in plan(ds, ReplayConfig(events=5000)) if isinstance(r, Trigger)]
    assert len(triggers) >= 150
    assert any(t.user_id.startswith("new-") for t in triggers)
    assert any(t.intention for t in triggers)
    assert any(t.candidates for t in triggers)


def test_percentile_nearest_rank():
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0
