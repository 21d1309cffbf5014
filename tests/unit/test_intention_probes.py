"""The intention protocols' phrasings keep their rules (model/intention_probes.py): eight
per genre and language, no genre word, no title, nothing fine-tuning used; each user's
intention is one of the held-out item's genres, fixed by the seed."""

from __future__ import annotations

import re
import unicodedata

import pytest

from model.data import load_ml100k
from model.evaluation import leave_one_out
from model.intention_probes import PROBES_EN, PROBES_ZH, probe_intention
from model.train import GENRES_ZH, TRAIN_INTENTIONS_EN, TRAIN_INTENTIONS_ZH

# The genre's name and the stems of its words, which an English phrasing must not contain.
FORBIDDEN_EN = {
    "Action": ("action",),
    "Adventure": ("adventur",),
    "Animation": ("animat",),
    "Children's": ("children", "child"),
    "Comedy": ("comed", "comic"),
    "Crime": ("crime",),
    "Documentary": ("documentar",),
    "Drama": ("drama",),
    "Fantasy": ("fantas",),
    "Film-Noir": ("noir",),
    "Horror": ("horror",),
    "Musical": ("musical",),
    "Mystery": ("myster",),
    "Romance": ("roman",),
    "Sci-Fi": ("sci-fi", "scifi", "science fiction"),
    "Thriller": ("thrill",),
    "War": (r"\bwars?\b",),
    "Western": ("western",),
}


def _fold(text: str) -> str:
    return " ".join(re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold()))


@pytest.fixture(scope="module")
def dataset():
    return load_ml100k(".data")


def test_eight_distinct_phrasings_per_genre_and_language():
    assert set(PROBES_EN) == set(PROBES_ZH) == set(GENRES_ZH) == set(FORBIDDEN_EN)
    for probes in (PROBES_EN, PROBES_ZH):
        for genre, phrasings in probes.items():
            assert len(phrasings) >= 8 and len(set(phrasings)) == len(phrasings), genre


def test_no_phrasing_uses_its_genre_word():
    for genre, phrasings in PROBES_EN.items():
        for phrase in phrasings:
            for pattern in FORBIDDEN_EN[genre]:
                assert not re.search(pattern, phrase.lower()), (genre, phrase)
    for genre, phrasings in PROBES_ZH.items():
        for phrase in phrasings:
            assert GENRES_ZH[genre] not in phrase, (genre, phrase)


def test_no_phrasing_is_one_fine_tuning_used():
    used = {t.format(g=g.lower()) for t in TRAIN_INTENTIONS_EN for g in GENRES_ZH}
    used |= {t.format(g=zh) for t in TRAIN_INTENTIONS_ZH for zh in GENRES_ZH.values()}
    probes = {p for ps in (*PROBES_EN.values(), *PROBES_ZH.values()) for p in ps}
    assert len(used) == 18 * (len(TRAIN_INTENTIONS_EN) + len(TRAIN_INTENTIONS_ZH))
    assert not probes & used


def test_no_phrasing_names_a_title(dataset):
    """No ml-100k title (without its year and a trailing article) of four letters or more
    is a whole-word part of any English phrasing."""
    titles = set()
    for item in dataset.items.values():
        name = re.sub(r"\s*\(\d{4}\)\s*$", "", item.title)
        name = re.sub(r",\s*(The|A|An)$", "", name)
        folded = _fold(name)
        if len(folded.replace(" ", "")) >= 4:
            titles.add(folded)
    assert len(titles) > 1500
    for genre, phrasings in PROBES_EN.items():
        for phrase in phrasings:
            text = f" {_fold(phrase)} "
            named = [t for t in titles if f" {t} " in text]
            assert not named, (genre, phrase, named)


def test_each_user_gets_one_of_the_held_out_items_genres_fixed_by_the_seed(dataset):
    splits = leave_one_out(dataset)
    probes = {language: [probe_intention(dataset, s, language, seed=0) for s in splits] for language in ("en", "zh")}
    for language, table in (("en", PROBES_EN), ("zh", PROBES_ZH)):
        got = probes[language]
        assert sum(p is not None for p in got) >= 940  # only items of genre "unknown" have none
        for split, probe in zip(splits, got, strict=True):
            if probe is not None:
                genre, phrase = probe
                assert genre in dataset.items[split.test].genres and phrase in table[genre]
        assert got == [probe_intention(dataset, s, language, seed=0) for s in splits]
        assert got != [probe_intention(dataset, s, language, seed=1) for s in splits]
        assert len({p for p in got if p is not None}) > 100  # the phrasings are spread over users
