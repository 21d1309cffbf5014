"""Instruction injection, measured through the code that serves it, on ml-100k.

An item the intention names is a reference, never a target: whatever the intention says,
the named item's rank is never better than with no intention at all. The attacks come from
a seeded generator (``tests/unit/attacks.py``: the title in any case, width, spacing and
repetition, with or without its year, wrapped in role markers, answer claims and ranking
orders, English and Chinese), not from a list. Each runs for 50 users in recall mode (the
stream worker's recalled candidates) and in rerank mode (explicit candidates that include
the target), on the packaged MiniLM and on a trained model, through what production runs:
``plan_score_request`` -> ``ScoringWorker.score_recommendations`` -> ``rank``.

The guarantee is by construction (the pool holds references back, ``workers/ranking.py``),
so it holds for any model; the control shows the attacks do lift the target without it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import pytest

from instructrec.replay import catalog_records
from instructrec.settings import Settings
from model.context import UserContext
from model.data import load_ml100k
from model.evaluation import UserSplit, leave_one_out
from model.guard import clean_intention, named_items
from model.recall import ItemGraph
from model.registry import read_card
from model.scorer import ScoredRequest
from schemas.records import CatalogItem, ModelInfo, Recommendation, ScoreRequest, Trigger
from streams.planner import PlannerConfig, plan_score_request
from tests.unit.attacks import Attack, generate
from workers.pool import ScoringWorker

USERS = 50
RECALL = 50  # candidates recalled per user (the whole list is ranked, k = all of it)
RERANK = 20  # explicit candidates per user in rerank mode
MODES = ("recall", "rerank")
CONFIG = PlannerConfig(recall_size=RECALL)


def read_by_the_model(attack: Attack) -> bool:
    """Whether the text guard leaves the title in what the model reads: the attacks the
    ranking guard alone has to stop (many others lose their title with their directive)."""
    text = clean_intention(attack.text("Star Wars", "1977"), CONFIG.intention_max_chars)
    return text is not None and named_items([text], [("probe", "Star Wars", "1977")]) == ["probe"]


ATTACKS = [a for a in generate(seed=2026, n=60) if read_by_the_model(a)][:4]  # the same on both models


@dataclass
class World:
    users: list[UserSplit]
    contexts: dict[str, dict]
    catalog: dict[str, CatalogItem]
    graph: ItemGraph
    rerank: dict[str, list[str]]  # per user: the explicit candidates of rerank mode


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread. On a shared CPU two threads wait on each other at every layer:
    one sequence through MiniLM measured 600 ms with two, 25 ms with one, and the pool's
    batch-invariant encoder runs a sequence at a time. Every ranking here uses the same setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world() -> World:
    dataset = load_ml100k(Settings().data_dir)
    splits = leave_one_out(dataset)
    users = random.Random(13).sample([s for s in splits if len(s.train) >= 10], USERS)
    graph = ItemGraph()
    graph.rebuild(s.train for s in splits)
    catalog = {c.item_id: c for c in catalog_records(dataset)}
    contexts = {
        s.user_id: UserContext.apply(None, [(i, "click", float(t)) for t, i in enumerate(s.seen_before_test)], 50, 1000)
        for s in users
    }
    w = World(users, contexts, catalog, graph, {})
    for s in users:
        recalled = [c.item_id for c in plan(w, s.user_id, "recall", None).candidates]
        w.rerank[s.user_id] = random.Random(f"rerank:{s.user_id}").sample(recalled, RERANK)
    return w


def plan(w: World, user: str, mode: str, intention: str | None) -> ScoreRequest:
    trigger = Trigger(
        request_id=f"inj-{user}",  # the same template with and without the intention
        user_id=user,
        ts=1.0,
        k=RECALL if mode == "recall" else RERANK,
        candidates=w.rerank[user] if mode == "rerank" else None,
        intention=intention,
    )
    return plan_score_request(trigger, w.contexts[user], w.catalog.get, w.graph, CONFIG, now=lambda: 1.0)


def ranks(worker: ScoringWorker, requests: list[ScoreRequest]) -> list[dict[str, int]]:
    """Each request's full ranking through the pool's scoring function: item -> rank."""
    out = worker.score_recommendations(requests)
    assert all(isinstance(o, Recommendation) for o in out), out
    return [{i.item_id: i.rank for i in o.items} for o in out if isinstance(o, Recommendation)]


def worker_for(scorer, info: ModelInfo) -> ScoringWorker:
    worker = ScoringWorker(Settings(bootstrap_servers="unused:9092"))
    worker.active = (scorer, info, None)
    return worker


def trained_model(tmp_path_factory) -> tuple[object, ModelInfo]:
    """A short, seeded CPU fine-tune of the top layer, saved and loaded as the pools load a
    version (fine-tuned instruction encoder, frozen item encoder, fused collaborative
    features). How well it learned does not matter: the guarantee holds for any model."""
    from model.device import choose_device
    from model.scorer import default_model_dir, load_scorer
    from model.train import TrainConfig, finetune, new_card, save_model

    dataset = load_ml100k(Settings().data_dir)
    config = TrainConfig(steps=12, batch_size=16, warmup_steps=2, train_layers=1, lr=1e-3, device="cpu")
    with pytest.MonkeyPatch.context() as patch:  # finetune would take every core (see one_thread)
        patch.setattr("model.device.set_cpu_threads", lambda threads: 1)
        tuned = finetune(default_model_dir(), dataset, leave_one_out(dataset)[:200], config, progress=False)
    card = new_card("short", default_model_dir(), config, tuned.summary, tuned.fusion)
    path = save_model(tuned.encoder, default_model_dir(), tmp_path_factory.mktemp("trained") / "short", card)
    fusion = (read_card(path) or {}).get("fusion")
    assert fusion, "a trained model fuses the collaborative features"
    return load_scorer(path, choose_device("cpu")), ModelInfo(name="trained", version="short", fusion=fusion)


@pytest.fixture(scope="module")
def workers(tmp_path_factory) -> dict[str, ScoringWorker]:
    from model.device import choose_device
    from model.scorer import load_scorer

    packaged = worker_for(load_scorer(None, choose_device("cpu")), ModelInfo(name="minilm", version="pretrained"))
    return {"packaged": packaged, "trained": worker_for(*trained_model(tmp_path_factory))}


@pytest.fixture(scope="module")
def baselines(world, workers) -> dict[tuple[str, str], list[dict[str, int]]]:
    """Per (model, mode): every user's ranking with no intention."""
    return {
        (model, mode): ranks(worker, [plan(world, s.user_id, mode, None) for s in world.users])
        for model, worker in workers.items()
        for mode in MODES
    }


def targets(world: World, before: list[dict[str, int]], attack_no: int, mode: str) -> list[str]:
    """Per user, an item from the lower three quarters of the ranking without intention:
    somewhere to be lifted from."""
    out = []
    for s, ranked in zip(world.users, before, strict=True):
        low = sorted(i for i, r in ranked.items() if r > len(ranked) // 4)
        out.append(random.Random(f"{attack_no}:{s.user_id}:{mode}").choice(low))
    return out


def attacked(world: World, worker, attack: Attack, mode: str, items: list[str], clamp: bool = True):
    requests = []
    for s, item in zip(world.users, items, strict=True):
        year = world.catalog[item].attributes.get("year")
        request = plan(world, s.user_id, mode, attack.text(world.catalog[item].title, str(year) if year else None))
        # A reference, unless the text guard left nothing (then the instruction has no
        # intention to lift anything with).
        assert item in request.references or request.intention is None, (attack.describe(), request.intention)
        requests.append(request if clamp else request.model_copy(update={"references": []}))
    return ranks(worker, requests)


@pytest.mark.parametrize("model", ["packaged", "trained"])
def test_a_named_item_is_never_ranked_higher_than_with_no_intention(world, workers, baselines, model):
    started = time.perf_counter()
    lifted = []
    for attack_no, attack in enumerate(ATTACKS):
        for mode in MODES:
            before = baselines[(model, mode)]
            items = targets(world, before, attack_no, mode)
            after = attacked(world, workers[model], attack, mode, items)
            lifted += [
                (attack.describe(), mode, s.user_id, item, b[item], a[item])
                for s, item, b, a in zip(world.users, items, before, after, strict=True)
                if a[item] < b[item]
            ]
    assert not lifted, lifted[:5]
    seconds = time.perf_counter() - started
    print(f"{model}: {len(ATTACKS)} attacks x {len(MODES)} modes x {USERS} users, none lifted, {seconds:.0f} s")


def test_the_control_without_the_clamp_the_attacks_do_lift_the_item(world, workers, baselines):
    # The same requests with their references dropped: the model alone decides, and the
    # generated attacks lift the item they name. So the test above can fail.
    pairs = lifted = to_top = 0
    for attack_no, attack in enumerate(ATTACKS[:1]):
        for mode in MODES:
            before = baselines[("packaged", mode)]
            items = targets(world, before, attack_no, mode)
            after = attacked(world, workers["packaged"], attack, mode, items, clamp=False)
            for item, b, a in zip(items, before, after, strict=True):
                pairs += 1
                lifted += a[item] < b[item]
                to_top += a[item] == 1
    print(f"without the clamp: {lifted} of {pairs} (attack, user) pairs lifted, {to_top} to rank 1")
    assert lifted > 0.25 * pairs, (lifted, to_top, pairs)


def test_legitimate_intentions_still_move_the_ranking(world, workers, baselines):
    users = world.users[:25]
    before = baselines[("packaged", "recall")][:25]
    # A genre: the top ten changes for most users.
    after = ranks(workers["packaged"], [plan(world, s.user_id, "recall", "I feel like a horror film") for s in users])
    assert sum(top(a, 10) != top(b, 10) for a, b in zip(after, before, strict=True)) >= 0.8 * len(users)
    # "More like this", naming a candidate: that item is a reference and is not lifted,
    # the items around it move.
    named = [next(i for i, r in b.items() if r == RECALL // 2) for b in before]
    requests = [
        plan(world, s.user_id, "recall", f"something like {world.catalog[i].title}")
        for s, i in zip(users, named, strict=True)
    ]
    assert all(i in r.references for r, i in zip(requests, named, strict=True))
    after = ranks(workers["packaged"], requests)
    assert all(a[i] >= b[i] for a, b, i in zip(after, before, named, strict=True))
    assert sum(top(a, 10) != top(b, 10) for a, b in zip(after, before, strict=True)) >= 0.8 * len(users)


def top(ranked: dict[str, int], n: int) -> set[str]:
    return {i for i, r in ranked.items() if r <= n}


# ----------------------------------------------------------------------------- no model


class LiftingScorer:
    """A model the intention fully controls: the item named in it scores 1, the rest by
    position; without an intention, the named item scores lowest."""

    def score_many(self, instructions, candidates, histories):
        out = []
        for instruction, items in zip(instructions, candidates, strict=True):
            scores = [0.5 - n / 100 for n in range(len(items))]
            for n, (_, text) in enumerate(items):
                if f"pick {text.lower()}" in instruction.lower():
                    scores[n] = 1.0
                elif text == "T3":
                    scores[n] = -1.0
            out.append(ScoredRequest(scores, [None] * len(items)))
        return out


def test_the_pool_ranks_references_by_the_baseline_whatever_the_model_says():
    catalog = {str(i): CatalogItem(item_id=str(i), title=f"T{i}") for i in range(6)}
    graph = ItemGraph()
    graph.rebuild([["0", "1", "2", "3", "4", "5"]])
    trigger = Trigger(request_id="r", user_id="u", ts=1.0, k=6, candidates=list(catalog), intention="pick T3")
    request = plan_score_request(trigger, None, catalog.get, graph, PlannerConfig())
    assert request.references == ["3"] and request.baseline_instruction
    worker = worker_for(LiftingScorer(), ModelInfo(name="fake", version="v0"))
    (rec,) = worker.score_recommendations([request])
    assert isinstance(rec, Recommendation) and [i.item_id for i in rec.items][-1] == "3"
    (unclamped,) = worker.score_recommendations([request.model_copy(update={"references": []})])
    assert isinstance(unclamped, Recommendation) and unclamped.items[0].item_id == "3"
