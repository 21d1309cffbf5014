"""The real packaged model, no broker: cache behaviour and that the scores mean something."""

import random

import pytest
import torch

from model.scorer import BiEncoderScorer, TextEncoder, length_bucket


@pytest.fixture(scope="module")
def scorer():
    return BiEncoderScorer(TextEncoder(max_length=64), cache_size=100)


def test_embeddings_are_unit_vectors(scorer):
    vecs = scorer.encoder.encode(["a", "a much longer text about space ships"])
    assert vecs.shape == (2, 384)
    assert vecs.norm(dim=1).sub(1).abs().max() < 1e-4


def test_item_embeddings_are_recomputed_only_when_text_changes(scorer, monkeypatch):
    calls = []
    real = scorer.encoder.encode
    monkeypatch.setattr(scorer.encoder, "encode", lambda texts: calls.append(list(texts)) or real(texts))
    scorer.item_vectors([("1", "Toy Story"), ("2", "Heat")])
    scorer.item_vectors([("1", "Toy Story"), ("2", "Heat"), ("1", "Toy Story")])
    scorer.item_vectors([("1", "Toy Story (1995). Animation")])
    assert calls == [["Toy Story", "Heat"], ["Toy Story (1995). Animation"]]


def test_scores_follow_meaning_and_because_points_at_history(scorer):
    [result] = scorer.score_many(
        ["The user recently watched Star Wars and Alien. Recommend the movie they will want to watch next."],
        [
            [
                ("a", "Toy Story (1995). Animation, Children's, Comedy"),
                ("b", "The Empire Strikes Back (1980). Action, Adventure, Sci-Fi, War"),
            ]
        ],
        [[("h1", "Sense and Sensibility (1995). Drama, Romance"), ("h2", "Star Wars (1977). Action, Sci-Fi")]],
    )
    assert len(result.scores) == 2
    assert result.scores[1] > result.scores[0]
    assert result.because[1] == 1  # Empire is closest to Star Wars, not to the period drama


def test_requests_scored_together_equal_requests_scored_alone(scorer):
    items = [[("1", "Heat (1995). Action"), ("2", "Babe (1995). Comedy")], [("3", "Alien (1979). Horror")]]
    together = scorer.score_many(["a crime film", "a scary film"], items, [[], []])
    alone = [scorer.score_many([q], [c], [[]])[0] for q, c in zip(["a crime film", "a scary film"], items, strict=True)]
    for t, a in zip(together, alone, strict=True):
        assert t.scores == pytest.approx(a.scores, abs=1e-5)


TITLES = [
    "Heat (1995). Action, Crime, Thriller",
    "Babe (1995). Children's, Comedy, Drama",
    "Star Wars (1977). Action, Adventure, Romance, Sci-Fi, War",
    "Alien (1979). Action, Horror, Sci-Fi, Thriller",
    "Fargo (1996). Crime, Drama, Thriller",
    "The user recently watched Twelve Monkeys, Contact, Scream and Fargo. Right now they are looking for "
    '"something light for tonight". Recommend the movie they will want to watch next.',
    "用户最近看了《Star Wars》、《Fargo》。推荐他们接下来想看的电影。",
    "It (1990)",
]


def _batches(seed: int, n: int = 12) -> list[list[str]]:
    rng = random.Random(seed)
    return [[rng.choice(TITLES) for _ in range(rng.randint(2, 40))] for _ in range(n)]


def test_a_texts_embedding_is_bitwise_the_same_in_any_batch(scorer):
    """What makes a re-scored request's duplicate identical: a text's vector depends on
    the text alone, not on the batch it shares (its neighbours, their lengths, the count)."""
    alone = {t: scorer.encoder.encode([t])[0] for t in TITLES}
    for batch in _batches(0):
        for text, vec in zip(batch, scorer.encoder.encode(batch), strict=True):
            assert torch.equal(vec, alone[text]), text


def test_without_canonical_shapes_the_batch_changes_the_last_bits(scorer):
    """The control: dynamic padding (batch_invariant=False) is what broke the promise."""
    dynamic = TextEncoder(max_length=64, batch_invariant=False)
    alone = {t: dynamic.encode([t])[0] for t in TITLES}
    differing = sum(
        not torch.equal(vec, alone[text])
        for batch in _batches(1)
        for text, vec in zip(batch, dynamic.encode(batch), strict=True)
    )
    assert differing > 0
    canonical = scorer.encoder.encode(TITLES)
    assert torch.nn.functional.cosine_similarity(canonical, torch.stack(list(alone.values()))).min() > 0.9999


def test_length_buckets_are_powers_of_two_up_to_the_limit():
    assert [length_bucket(n, 128) for n in (1, 16, 17, 33, 64, 65, 128, 500)] == [16, 16, 32, 64, 64, 128, 128, 128]
    assert length_bucket(100, 100) == 100


def test_int8_backend_quantizes_on_cpu_and_stays_close_to_fp32(scorer):
    int8 = TextEncoder(max_length=64, int8=True)
    assert int8.int8
    texts = ["Star Wars (1977). Action, Sci-Fi", "Babe (1995). Children's, Comedy, Drama"]
    a, b = scorer.encoder.encode(texts), int8.encode(texts)
    assert b.norm(dim=1).sub(1).abs().max() < 1e-4
    assert (a * b).sum(dim=1).min() > 0.8
