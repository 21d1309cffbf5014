"""The served version's bookkeeping (instructrec/served.py) and what `make run` prints and
sums up about it (instructrec/runner.py, instructrec/results.py); no broker, no training."""

from dataclasses import asdict, replace

import torch

from instructrec.results import ResultCollector, format_result
from instructrec.runner import intention_genre_share, served_versions
from instructrec.served import served_config, served_version, validation_figures
from instructrec.settings import Settings
from model.evaluation import UserSplit
from model.registry import write_card, write_latest
from schemas.records import ModelInfo, RankedItem, Recommendation, Timings


def _version(root, name, card):
    (root / name).mkdir(parents=True)
    (root / name / "config.json").write_text("{}")
    write_card(root / name, {"version": name, **card})


def test_the_served_version_is_latest_only_when_trained_with_the_recipe_and_calibrated(tmp_path):
    recipe = served_config()
    assert served_version(tmp_path, recipe) is None  # nothing there
    _version(tmp_path, "v1", {"train_config": asdict(recipe), "fusion_calibrated": True})
    assert served_version(tmp_path, recipe) is None  # no LATEST names it
    write_latest(tmp_path, "v1")
    assert served_version(tmp_path, recipe) == tmp_path / "v1"
    assert served_version(tmp_path, replace(recipe, steps=recipe.steps + 1)) is None  # another recipe
    assert served_version(tmp_path, replace(recipe, seed=1)) is None
    _version(tmp_path, "v2", {"train_config": asdict(recipe)})  # saved, not yet calibrated
    write_latest(tmp_path, "v2")
    assert served_version(tmp_path, recipe) is None
    write_latest(tmp_path, "gone")
    assert served_version(tmp_path, recipe) is None


def test_validation_figures_rank_the_validation_item_and_never_the_test_item():
    catalog = ["a", "b", "c", "d", "e"]
    splits = [UserSplit("u1", ("a", "b"), "c", "d"), UserSplit("u2", ("b",), "e", "c"), UserSplit("u3", (), "a", "b")]
    seen: list[tuple[tuple[str, ...], str, list[str]]] = []

    def scorer(split, candidates):
        seen.append((split.seen_before_test, split.test, list(candidates)))
        return [1.0 if c == split.test else 0.0 for c in candidates]

    figures = validation_figures({"m": scorer}, splits, catalog)
    assert figures["m"]["users"] == 2 and figures["m"]["hr@1"] == 1.0  # u3 has no training history
    # the history is the training part, the target the validation item; the test item is
    # a candidate like any unseen one, never the target, and seen items are masked
    assert seen[0][:2] == (("a", "b"), "c") and set(seen[0][2]) == {"c", "d", "e"}
    assert seen[1][:2] == (("b",), "e") and set(seen[1][2]) == {"a", "c", "d", "e"}


def _rec(request_id, version, items, cold=False):
    return Recommendation(
        recommendation_id=f"r-{request_id}",
        request_id=request_id,
        user_id="u",
        items=[RankedItem(item_id=i, title=f"T{i}", rank=n + 1, score=1.0 - n / 10) for n, i in enumerate(items)],
        instruction="x",
        template="t",
        explanation="because",
        cold_start=cold,
        model=ModelInfo(name="m", version=version),
        timings=Timings(trigger_ts=1.0, request_ts=1.0, scored_ts=1.0, queue_ms=0, score_ms=0, pipeline_ms=0),
        ts=1.0,
    )


def test_the_summary_names_the_served_version_and_how_the_lists_follow_the_intentions():
    collector = ResultCollector(Settings())
    genres = {"1": ("Comedy",), "2": ("Drama",), "3": ("Horror",), "4": ("Comedy", "Romance")}
    for rid, version, items in (
        ("p1", "v-new", ["2", "3"]),
        ("p2", "v-new", ["1", "2"]),
        ("c1", "v-new", ["1", "4"]),
        ("c2", "v-old", ["4", "2"]),
        ("h1", "v-new", ["3", "2"]),
        ("x1", "v-new", ["1", "3"]),
    ):
        collector.results[rid] = _rec(rid, version, items)
    collector.results["cold"] = _rec("cold", "v-new", ["1", "1"], cold=True)  # left out of the plain share
    intentions = {"c1": "a 90s comedy", "c2": "a 90s comedy", "h1": "a scary horror film", "x1": "something nice"}
    assert served_versions(collector) == {"model_version": "v-new", "model_versions": {"v-new": 6, "v-old": 1}}
    shares = intention_genre_share(collector, intentions, genres)
    # plain answers (p1, p2): 1 comedy and 1 horror of 4 items; "something nice" names no genre
    assert shares == {"a 90s comedy": [0.25, 0.75, 2], "a scary horror film": [0.25, 0.5, 1]}
    assert served_versions(ResultCollector(Settings())) == {"model_version": None, "model_versions": {}}


def test_a_printed_result_shows_the_intention_and_the_genres_only_with_one():
    rec = _rec("r1", "v", ["1", "3"])
    genres = {"1": ("Comedy",), "3": ("Horror", "Thriller")}
    shown = format_result(rec, 12.0, "a scary horror film", genres)
    assert "1. T1 [Comedy] (1.00)" in shown and "2. T3 [Horror/Thriller] (0.90)" in shown
    assert "asked for: “a scary horror film”" in shown and shown.endswith("why: because")
    plain = format_result(rec, 12.0, None, genres)
    assert "[Comedy]" not in plain and "asked for" not in plain and plain.startswith("[u] r1 12 ms: 1. T1 (1.00)")


def test_fused_validation_ranks_count_ties_against_the_item_and_ignore_padding():
    import torch

    from model.train import FusionRows, fit_weights, ranks_under

    # two users; features (text, cooc, cooc_long, pop); the validation item is column 0
    feats = torch.tensor(
        [
            [[1.0, 0, 0, 0], [0.5, 0, 0, 0], [1.0, 0, 0, 0], [2.0, 0, 0, 0]],  # a tie and a better one
            [[0.0, 2, 0, 0], [-1.0, 1, 0, 0], [9.0, 9, 9, 9], [0.0, 0, 0, 0]],  # column 2 is padding
        ]
    )
    valid = torch.tensor([[True, True, True, True], [True, True, False, True]])
    rows = FusionRows(feats, valid)
    assert ranks_under(rows, {"text": 1.0, "cooc": 0.0, "cooc_long": 0.0, "pop": 0.0}) == [2, 1]
    assert ranks_under(rows, {"text": 0.0, "cooc": 1.0, "cooc_long": 0.0, "pop": 0.0}) == [3, 0]
    weights = fit_weights(rows, steps=200)
    assert set(weights) == {"text", "cooc", "cooc_long", "pop"} and weights["cooc"] > 1.0  # cooc finds user 2's item


class _Texts:
    """A TextModel's parts keep_item_vectors uses, over the packaged MiniLM."""

    def __init__(self, texts):
        from model.device import choose_device
        from model.scorer import load_scorer

        self.scorer = load_scorer(None, choose_device("cpu"), 32)
        self.texts = texts


def test_the_catalog_vectors_are_written_once_where_a_pool_of_that_version_loads_them(tmp_path):
    from instructrec.served import keep_item_vectors
    from model.device import choose_device
    from model.scorer import load_scorer

    texts = {"1": "Toy Story (1995). Animation", "2": "Heat (1995). Action, Crime", "3": "Fargo (1996). Crime"}
    model = _Texts(texts)
    assert keep_item_vectors(model, tmp_path, "v1") == 3
    assert keep_item_vectors(_Texts(texts), tmp_path, "v1") == 0  # all there already
    pool = load_scorer(None, choose_device("cpu"), 32)  # as a pool loads the version
    assert pool.attach_store(tmp_path, "v2") == 0 and pool.attach_store(tmp_path, "v1") == 3
    assert pool.missing([(i, t) for i, t in texts.items()]) == []
    (v,) = pool.item_vectors([("2", texts["2"])])
    assert torch.equal(v, model.scorer.item_vectors([("2", texts["2"])])[0])
