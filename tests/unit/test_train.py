"""Fine-tuning: the examples never contain a held-out item, the collaborative features of
a training example leave the user out, and a short real run on MiniLM produces a version
directory the pools can load."""

from __future__ import annotations

import math
import random

import pytest
import torch

from instructrec.settings import Settings
from model.data import load_ml100k
from model.device import choose_device
from model.evaluation import leave_one_out
from model.features import FEATURE_LONG, latest_distinct, raw_collaborative
from model.recall import ItemGraph
from model.registry import read_card
from model.scorer import default_model_dir, load_scorer
from model.train import LeaveUserOut, TrainConfig, finetune, make_examples, new_card, save_model


@pytest.fixture(scope="module")
def ml100k():
    dataset = load_ml100k(Settings().data_dir)
    return dataset, leave_one_out(dataset)


def test_examples_come_from_training_histories_only(ml100k):
    dataset, splits = ml100k
    examples = make_examples(dataset, splits, TrainConfig(intention_share=0.5))
    assert len(examples) == sum(len(s.train) - 1 for s in splits)
    for ex in examples[::97]:
        split = splits[ex.user]
        assert 1 <= ex.t < len(split.train)  # the target is a training item, never valid/test
    with_intention = [ex for ex in examples if ex.intention]
    assert 0.4 < len(with_intention) / len(examples) < 0.6


def test_leave_user_out_features_equal_a_graph_without_that_user(ml100k):
    dataset, splits = ml100k
    small = splits[:60]
    catalog = sorted(dataset.items)
    collab = LeaveUserOut(small, catalog)
    for user in random.Random(1).sample(range(len(small)), 5):
        latest = latest_distinct(small[user].train[:40], FEATURE_LONG)
        rows = collab.rows(user, latest)
        without = ItemGraph()
        without.rebuild(s.train for n, s in enumerate(small) if n != user)
        expected = raw_collaborative(without, latest, catalog)  # what serving computes
        assert rows.T.flatten().tolist() == pytest.approx([x for r in expected for x in r], abs=1e-4)
        assert rows[0].sum() > 0 and rows[1].sum() > rows[0].sum()


def test_a_short_run_saves_a_version_the_pools_load(ml100k, tmp_path):
    dataset, splits = ml100k
    config = TrainConfig(steps=4, batch_size=4, warmup_steps=1, train_layers=1, lr=1e-3, device="cpu")
    tuned = finetune(default_model_dir(), dataset, splits[:40], config, progress=False)
    assert len(tuned.losses) == 4 and all(math.isfinite(x) for x in tuned.losses)
    assert set(tuned.fusion) == {"text", "cooc", "cooc_long", "pop"} and tuned.fusion["text"] > 0
    card = new_card("v-test", default_model_dir(), config, tuned.summary, tuned.fusion)
    out = save_model(tuned.encoder, default_model_dir(), tmp_path / "v-test", card)
    loaded = read_card(out)
    assert loaded is not None and loaded["fusion"] == pytest.approx(tuned.fusion)
    assert len(loaded["templates"]) >= 20 and loaded["train_config"]["steps"] == 4
    assert {t["name"] for t in loaded["templates"]} >= {"en-watched-v1", "zh-watched-v1"}
    assert all("{history}" in t["preference"] for t in loaded["templates"])

    device = choose_device("cpu")
    tuned_scorer = load_scorer(out, device)
    base_scorer = load_scorer(None, device)
    assert tuned_scorer.item_encoder is not tuned_scorer.encoder  # the frozen item side
    text = ["The user recently watched Alien (1979). Recommend the movie they will want to watch next."]
    # Only the top layer trained: the item side is the base model, the instruction side moved.
    assert torch.allclose(tuned_scorer.item_encoder.encode(text), base_scorer.encoder.encode(text), atol=1e-5)
    assert not torch.allclose(tuned_scorer.encoder.encode(text), base_scorer.encoder.encode(text), atol=1e-4)


def test_training_is_reproducible_given_the_seed(ml100k):
    dataset, splits = ml100k
    config = TrainConfig(steps=2, batch_size=4, warmup_steps=1, train_layers=1, device="cpu", seed=5)
    a = finetune(default_model_dir(), dataset, splits[:30], config, progress=False)
    b = finetune(default_model_dir(), dataset, splits[:30], config, progress=False)
    c = finetune(
        default_model_dir(), dataset, splits[:30], TrainConfig(**{**config.__dict__, "seed": 6}), progress=False
    )
    assert a.losses == b.losses and a.fusion == b.fusion
    assert a.losses != c.losses
