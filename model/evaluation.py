"""Offline evaluation on ml-100k: leave-one-out split, candidate protocols, metrics.

- Split: each user's interactions in time order (ties broken by file order); the last is
  the test item, the second-to-last the validation item, the rest is training history.
- Protocols: ``full`` (every catalog item, the user's training and validation items
  masked; the primary one), and ``1+99``, ``1+19`` and ``1+9`` (the held-out item plus
  99 / 19 / 9 items the user never interacted with, sampled with a fixed seed; ``1+9`` is
  InstructRec's own); ``1+9-hard``: nine negatives a strong retriever ranks highest;
  ``long-tail``: full ranking for the users whose held-out item is in the less popular
  half of the catalog (training interactions at most the catalog's median).
- Metrics: HR@1/5/10, NDCG@5/10, MRR, from the rank of the held-out item among the
  candidates (rank 0 = first; ties are broken against the held-out item, so a method that
  scores everything equally gets no credit).

Methods are scoring functions ``score(user, candidates) -> scores``; every comparison in a
run sees the same users, splits and candidates.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from model.data import Dataset
from model.features import latest_distinct
from model.recall import ItemGraph

HARD = "1+9-hard"  # nine negatives from a retriever (InstructRec's hard setting)
LONG_TAIL = "long-tail"  # full ranking, users whose held-out item is in the less popular half
PROTOCOLS = ("full", "1+99", "1+9", HARD, LONG_TAIL)
SAMPLED = {"1+9": 9, "1+19": 19, "1+99": 99}  # negatives per sampled protocol
Scorer = Callable[["UserSplit", Sequence[str]], Sequence[float]]


@dataclass(frozen=True)
class UserSplit:
    user_id: str
    train: tuple[str, ...]  # oldest first
    valid: str
    test: str

    @property
    def seen_before_test(self) -> tuple[str, ...]:
        return (*self.train, self.valid)


def leave_one_out(dataset: Dataset, min_interactions: int = 3, ties: str = "file") -> list[UserSplit]:
    """One split per user with at least ``min_interactions``. Interactions with the same
    timestamp keep file order (``ties="file"``, the protocol: it behaves as a random
    order); ``ties="item-id"`` orders them by ascending item id instead, a sensitivity
    bound only: the tied item with the highest id is then held out, and low ids are the
    popular films, so held-out items get less popular and every method scores lower."""
    interactions = dataset.interactions  # already in time order with file-order ties
    if ties == "item-id":
        interactions = sorted(interactions, key=lambda x: (x.ts, _id_key(x.item_id)))
    elif ties != "file":
        raise ValueError(f"ties: 'file' or 'item-id', not {ties!r}")
    by_user: defaultdict[str, list[str]] = defaultdict(list)
    for x in interactions:
        by_user[x.user_id].append(x.item_id)
    return [
        UserSplit(user, tuple(items[:-2]), items[-2], items[-1])
        for user, items in sorted(by_user.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else kv[0])
        if len(items) >= min_interactions
    ]


def _id_key(item_id: str) -> tuple[int, int | str]:
    return (0, int(item_id)) if item_id.isdigit() else (1, item_id)


def candidates_for(
    split: UserSplit,
    protocol: str,
    catalog: Sequence[str],
    seed: int,
    hard: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """The held-out item first, then negatives: sampled (fixed seed per user and protocol)
    from items the user never interacted with, for ``full`` every other unmasked item, and
    for ``1+9-hard`` the user's nine in ``hard`` (a strong retriever's top-ranked items
    other than the held-out one, fixed per user and shared by every method)."""
    seen = set(split.seen_before_test) | {split.test}
    if protocol in ("full", LONG_TAIL):
        return [split.test] + [i for i in catalog if i not in seen]
    if protocol == HARD:
        if hard is None:
            raise ValueError(f"{HARD} needs the hard negatives of a retriever")
        negatives = list(hard[split.user_id])
        if len(negatives) != 9 or seen & set(negatives):
            raise ValueError(f"user {split.user_id}: hard negatives must be 9 items the user never had")
        return [split.test, *negatives]
    n = SAMPLED[protocol]
    pool = [i for i in catalog if i not in seen]
    rng = random.Random(f"{seed}:{protocol}:{split.user_id}")
    return [split.test, *rng.sample(pool, min(n, len(pool)))]


def long_tail_items(splits: Sequence[UserSplit], catalog: Sequence[str]) -> frozenset[str]:
    """The less popular half of ``catalog``: items with at most the median number of
    training interactions (over ``splits``' training histories; ties at the median are
    all in)."""
    counts = Counter(i for s in splits for i in s.train)
    ordered = sorted(counts.get(i, 0) for i in catalog)
    if not ordered:
        return frozenset()
    median = ordered[(len(ordered) - 1) // 2]
    return frozenset(i for i in catalog if counts.get(i, 0) <= median)


def rank_of_first(scores: Sequence[float]) -> int:
    """0-based rank of candidate 0 (the held-out item); ties count against it."""
    target = scores[0]
    return sum(1 for s in scores[1:] if s >= target)


@dataclass(frozen=True)
class Metrics:
    hr1: float
    hr5: float
    hr10: float
    ndcg5: float
    ndcg10: float
    mrr: float
    users: int

    def as_row(self) -> dict[str, float | int]:
        return {
            "hr@1": round(self.hr1, 4),
            "hr@5": round(self.hr5, 4),
            "hr@10": round(self.hr10, 4),
            "ndcg@5": round(self.ndcg5, 4),
            "ndcg@10": round(self.ndcg10, 4),
            "mrr": round(self.mrr, 4),
            "users": self.users,
        }


def metrics_from_ranks(ranks: Sequence[int]) -> Metrics:
    if not ranks:
        raise ValueError("no users to evaluate")
    n = len(ranks)

    def hr(k: int) -> float:
        return sum(1 for r in ranks if r < k) / n

    def ndcg(k: int) -> float:
        return sum(1.0 / math.log2(r + 2) for r in ranks if r < k) / n

    return Metrics(hr(1), hr(5), hr(10), ndcg(5), ndcg(10), sum(1.0 / (r + 1) for r in ranks) / n, n)


def evaluate(
    scorer: Scorer,
    splits: Sequence[UserSplit],
    protocol: str,
    catalog: Sequence[str],
    seed: int = 0,
    hard: Mapping[str, Sequence[str]] | None = None,
    tail: frozenset[str] | None = None,
) -> Metrics:
    """``hard``: the ``1+9-hard`` negatives per user; ``tail``: the ``long-tail`` items
    (``long_tail_items`` over every user's training history)."""
    if protocol == LONG_TAIL:
        if tail is None:
            raise ValueError(f"{LONG_TAIL} needs the long-tail items")
        splits = [s for s in splits if s.test in tail]
    ranks = []
    for split in splits:
        candidates = candidates_for(split, protocol, catalog, seed, hard)
        scores = scorer(split, candidates)
        if len(scores) != len(candidates):
            raise ValueError(f"{len(scores)} scores for {len(candidates)} candidates")
        ranks.append(rank_of_first(scores))
    return metrics_from_ranks(ranks)


# ----------------------------------------------------------------------------- baselines
# Every baseline learns from training histories only (never a validation or test item).


def random_scorer(seed: int = 0) -> Scorer:
    def score(split: UserSplit, candidates: Sequence[str]) -> list[float]:
        rng = random.Random(f"{seed}:random:{split.user_id}")
        return [rng.random() for _ in candidates]

    return score


def popularity_scorer(splits: Sequence[UserSplit]) -> Scorer:
    counts = Counter(i for s in splits for i in s.train)

    def score(_split: UserSplit, candidates: Sequence[str]) -> list[float]:
        return [float(counts.get(i, 0)) for i in candidates]

    return score


def cooccurrence_scorer(splits: Sequence[UserSplit], recent: int = 5, window: int = 3) -> Scorer:
    """The stream worker's recall graph, built from training histories: a candidate scores
    its co-occurrence with the user's latest items (weighted by recency), popularity
    breaking ties."""
    graph = ItemGraph(window=window)
    graph.rebuild(s.train for s in splits)
    popularity = graph.popularity
    norm = 1.0 + max(popularity.values(), default=0)

    def score(split: UserSplit, candidates: Sequence[str]) -> list[float]:
        totals = graph.cooccurrence(latest_distinct(split.seen_before_test, recent))
        return [totals.get(i, 0.0) + popularity.get(i, 0) / norm for i in candidates]

    return score


# Words a keyword filter would look for, per genre (English word prefixes, Chinese
# substrings): the fair text-aware baseline for the intention protocols.
GENRE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "Action": (
        "action", "fight", "explosion", "chase", "shootout", "stunt", "martial", "动作", "打斗", "爆炸", "枪战", "追车",
    ),
    "Adventure": ("adventur", "quest", "treasure", "expedition", "journey", "explor", "冒险", "探险", "宝藏", "远征"),
    "Animation": ("animat", "cartoon", "anime", "动画", "卡通"),
    "Children's": ("children", "child", "kid", "family", "儿童", "孩子", "小朋友", "合家欢"),
    "Comedy": ("comed", "funny", "laugh", "hilarious", "joke", "humo", "喜剧", "搞笑", "笑"),
    "Crime": ("crime", "criminal", "gangster", "mafia", "mob", "heist", "robber", "犯罪", "黑帮", "抢劫"),
    "Documentary": ("documentar", "true story", "real events", "nonfiction", "纪录", "真实"),
    "Drama": ("drama", "emotional", "serious", "moving", "剧情", "感人"),
    "Fantasy": ("fantas", "magic", "wizard", "dragon", "fairy", "奇幻", "魔法", "巫师", "龙"),
    "Film-Noir": ("noir", "femme fatale", "hard-boiled", "黑色"),
    "Horror": ("horror", "scary", "scare", "frighten", "ghost", "monster", "terrif", "恐怖", "吓人", "鬼"),
    "Musical": ("musical", "singing", "song", "danc", "歌舞", "唱", "舞"),
    "Mystery": ("myster", "whodunit", "detective", "clue", "puzzle", "悬疑", "谜", "侦探"),
    "Romance": ("roman", "love", "爱情", "恋", "爱"),
    "Sci-Fi": (
        "sci-fi", "science fiction", "space", "alien", "robot", "future", "科幻", "太空", "外星", "机器人", "未来",
    ),
    "Thriller": ("thrill", "suspense", "tense", "tension", "惊悚", "紧张", "悬念"),
    "War": ("war", "soldier", "battle", "army", "战争", "士兵", "战场", "战役"),
    "Western": ("western", "cowboy", "sheriff", "outlaw", "西部", "牛仔"),
}  # fmt: skip


def _keyword_pattern(keyword: str) -> re.Pattern[str]:
    if not keyword.isascii():
        return re.compile(re.escape(keyword))  # Chinese: anywhere
    # English: at the start of a word; a keyword of three letters or fewer is a whole word
    # (or its plural), so that "war" does not find "warm".
    return re.compile(r"\b" + re.escape(keyword) + (r"s?\b" if len(keyword) <= 3 else ""))


_GENRE_PATTERNS = {genre: [_keyword_pattern(k) for k in kws] for genre, kws in GENRE_KEYWORDS.items()}


def genres_named(text: str) -> set[str]:
    """The genres whose keywords ``text`` contains."""
    lowered = text.lower()
    return {genre for genre, patterns in _GENRE_PATTERNS.items() if any(p.search(lowered) for p in patterns)}


def genre_filter_scorer(dataset: Dataset, splits: Sequence[UserSplit]) -> Callable[..., list[float]]:
    """Co-occurrence ranking, with the candidates of the genres the intention's keywords
    name moved ahead of the rest (``genres_named``); without an intention, or when no
    keyword matches, the co-occurrence ranking itself."""
    base = cooccurrence_scorer(splits)

    def score(split: UserSplit, candidates: Sequence[str], intention: str | None = None) -> list[float]:
        scores = list(base(split, candidates))
        wanted = genres_named(intention) if intention else set()
        if not wanted:
            return scores
        lift = 1.0 + max(scores, default=0.0) - min(scores, default=0.0)
        return [
            s + lift if wanted & set(dataset.items[i].genres) else s for s, i in zip(scores, candidates, strict=True)
        ]

    return score
