"""Explanations built from the evidence: the intention and the history items that most
resemble each recommended item."""

from __future__ import annotations

from collections.abc import Sequence

QUOTE_MAX_CHARS = 120


def _quote(title: str) -> str:
    """A title or intention as quoted in an explanation, cut to QUOTE_MAX_CHARS."""
    if len(title) > QUOTE_MAX_CHARS:
        title = title[: QUOTE_MAX_CHARS - 1].rstrip() + "…"
    return f"“{title}”"


def explain(
    *,
    top_titles: Sequence[str],
    because_titles: Sequence[str | None],
    because_kinds: Sequence[str] = (),
    intention: str | None,
    cold_start: bool,
    sources: Sequence[str] = (),
    max_items: int = 3,
) -> str:
    """One or two sentences. ``because_titles[i]`` supports ``top_titles[i]``; its kind is
    "co-watched" (viewers of it also watched the item) or "similar" (nearest in embedding
    space, the default)."""
    if not top_titles:
        return "No candidate could be scored for this request."
    sentences: list[str] = []
    if cold_start:
        kind = "popular right now" if "popular" in sources else "new in the catalog"
        sentences.append(f"You have no history with us yet, so these are {kind}")
        if intention:
            sentences[-1] += f", ranked by how well they match {_quote(intention)}"
        sentences[-1] += "."
    else:
        links = []
        kinds = list(because_kinds) + ["similar"] * (len(top_titles) - len(because_kinds))
        for title, because, kind in list(zip(top_titles, because_titles, kinds, strict=False))[:max_items]:
            if because and kind == "co-watched":
                links.append(f"viewers of {_quote(because)} also watched {_quote(title)}")
            elif because:
                links.append(f"{_quote(title)} is close to {_quote(because)}")
        if links:
            sentences.append("Based on what you watched recently: " + "; ".join(links) + ".")
        if intention:
            sentences.append(f"Ranked for your request {_quote(intention)}.")
    return " ".join(sentences)
