"""SASRec learns a sequential pattern that popularity cannot see."""

from __future__ import annotations

import random

from model.sasrec import SASRecConfig, SASRecModel


def test_sasrec_learns_which_item_follows_which():
    items = [f"i{n}" for n in range(30)]
    rng = random.Random(0)
    # Every user walks the same cycle from a random start: item n is always followed by n+1.
    sequences = []
    for _ in range(200):
        start = rng.randrange(30)
        sequences.append([items[(start + k) % 30] for k in range(rng.randint(5, 20))])
    model = SASRecModel(items, SASRecConfig(max_len=20, hidden=32, epochs=50, dropout=0.1, seed=1))
    losses = model.fit(sequences)
    assert losses[-1] < 0.5 * losses[0]
    hits = 0
    for seq in sequences[:50]:
        expected = items[(items.index(seq[-1]) + 1) % 30]
        # As in the evaluation protocols, the user's own items are not candidates (the
        # training negatives never include them either).
        candidates = [i for i in items if i not in seq]
        scores = model.score(seq, candidates)
        hits += candidates[max(range(len(candidates)), key=scores.__getitem__)] == expected
    assert hits >= 40  # chance is about 1 in 18 (the unseen candidates)


def test_unknown_candidates_score_below_every_known_one():
    model = SASRecModel(["a", "b"], SASRecConfig(max_len=4, hidden=8, epochs=0))
    scores = model.score(["a"], ["b", "zzz"])
    assert scores[1] == float("-inf") and scores[0] > scores[1]
