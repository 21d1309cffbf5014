"""InstructRec instructions: preference (history) + intention (free text) + task form.

Pure functions. The template is chosen deterministically from the request id, so a
redelivered trigger builds the same instruction. Issue #4 widens the template set.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")
_SPACE = re.compile(r"\s+")


def clean_intention(text: str | None, max_chars: int) -> str | None:
    """Strip control/format characters, collapse whitespace, cap the length."""
    if not text:
        return None
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL.sub(" ", text)
    text = _SPACE.sub(" ", text).strip()
    if not text or max_chars <= 0:
        return None
    if len(text) > max_chars:
        text = text[:max_chars].rstrip() + "…"
    return text


@dataclass(frozen=True)
class Template:
    name: str
    preference: str  # uses {history}
    cold: str  # used when there is no history
    intention: str  # uses {intention}
    recommend: str  # task: open recommendation
    rerank: str  # task: rank given candidates


TEMPLATES: tuple[Template, ...] = (
    Template(
        name="en-watched-v1",
        preference="The user recently watched {history}.",
        cold="The user is new and has not watched anything yet.",
        intention="Right now they are looking for {intention}.",
        recommend="Recommend the {noun} they will want to watch next.",
        rerank="Rank the candidate {noun}s by how well each fits them.",
    ),
    Template(
        name="en-history-v1",
        preference="Viewing history, most recent first: {history}.",
        cold="There is no viewing history for this user.",
        intention="Their request: {intention}.",
        recommend="Which {noun} should they see next?",
        rerank="Order the given {noun}s from best to worst match.",
    ),
    Template(
        name="en-fan-v1",
        preference="A viewer who enjoyed {history}.",
        cold="A first-time viewer.",
        intention="They say: {intention}.",
        recommend="Suggest a {noun} this viewer would like.",
        rerank="Score each candidate {noun} for this viewer.",
    ),
)


@dataclass(frozen=True)
class Instruction:
    text: str
    template: str
    task: str  # "recommend" | "rerank"


def choose_template(request_id: str, templates: Sequence[Template] = TEMPLATES) -> Template:
    digest = hashlib.blake2b(request_id.encode(), digest_size=4).digest()
    return templates[int.from_bytes(digest, "big") % len(templates)]


def build_instruction(
    *,
    request_id: str,
    history_titles: Sequence[str],
    intention: str | None,
    task: str,
    noun: str = "movie",
    template: Template | None = None,
) -> Instruction:
    """Compose the instruction text. ``history_titles`` is most recent first."""
    tpl = template or choose_template(request_id)
    parts = []
    if history_titles:
        parts.append(tpl.preference.format(history=_join(history_titles)))
    else:
        parts.append(tpl.cold)
    if intention:
        parts.append(tpl.intention.format(intention=f'"{intention}"'))
    parts.append((tpl.rerank if task == "rerank" else tpl.recommend).format(noun=noun))
    return Instruction(" ".join(parts), tpl.name, task)


def _join(titles: Sequence[str]) -> str:
    if len(titles) == 1:
        return titles[0]
    return ", ".join(titles[:-1]) + " and " + titles[-1]
