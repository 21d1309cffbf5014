"""InstructRec instructions: preference (history) + intention (free text) + task form.

Pure functions. The template is chosen deterministically from (seed, request id), so a
redelivered trigger builds the same instruction; the result names the template.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

# The intention is guarded before it is built in (model/guard.py, re-exported here): role
# markers, answer claims, ranking orders and repetition are removed from the text, and the
# items it names are references, which the pool never ranks higher than without it.
from model.guard import clean_intention as clean_intention
from model.guard import guard_intention as guard_intention


@dataclass(frozen=True)
class Template:
    name: str
    preference: str  # uses {history}
    cold: str  # used when there is no history
    intention: str  # uses {intention}
    recommend: str  # task: open recommendation
    rerank: str  # task: rank given candidates


def _t(name: str, preference: str, cold: str, intention: str, recommend: str, rerank: str) -> Template:
    return Template(name, preference, cold, intention, recommend, rerank)


# Every template carries all three InstructRec parts: preference (history, or the cold
# sentence), intention (free text, when the trigger has one) and the task form (open
# recommendation / ranking of given candidates). English and Chinese; titles stay as the
# catalog spells them. Names are stable: results and model directories record them.
TEMPLATES: tuple[Template, ...] = (
    _t(
        "en-watched-v1",
        "The user recently watched {history}.",
        "The user is new and has not watched anything yet.",
        "Right now they are looking for {intention}.",
        "Recommend the {noun} they will want to watch next.",
        "Rank the candidate {noun}s by how well each fits them.",
    ),
    _t(
        "en-history-v1",
        "Viewing history, most recent first: {history}.",
        "There is no viewing history for this user.",
        "Their request: {intention}.",
        "Which {noun} should they see next?",
        "Order the given {noun}s from best to worst match.",
    ),
    _t(
        "en-fan-v1",
        "A viewer who enjoyed {history}.",
        "A first-time viewer.",
        "They say: {intention}.",
        "Suggest a {noun} this viewer would like.",
        "Score each candidate {noun} for this viewer.",
    ),
    _t(
        "en-assistant-v1",
        "You are a recommendation assistant. The user's latest picks were {history}.",
        "You are a recommendation assistant. The user has no history yet.",
        "They asked for {intention}.",
        "Pick the {noun} that best continues their taste.",
        "Sort the candidate {noun}s so the best fit comes first.",
    ),
    _t(
        "en-taste-v1",
        "Long-term taste, judged from {history}.",
        "Long-term taste unknown.",
        "Short-term intention: {intention}.",
        "Task: retrieve the {noun} that matches both.",
        "Task: re-rank the candidate {noun}s for this user.",
    ),
    _t(
        "en-profile-v1",
        "User profile: has seen {history}.",
        "User profile: empty.",
        "Current need: {intention}.",
        "Output the next {noun} for this profile.",
        "Rank the candidates for this profile.",
    ),
    _t(
        "en-tonight-v1",
        "Lately they have been watching {history}.",
        "They have not watched anything here before.",
        "Tonight they want {intention}.",
        "What {noun} would they enjoy now?",
        "Which of these {noun}s would they enjoy most?",
    ),
    _t(
        "en-similar-v1",
        "Given someone who liked {history},",
        "Given someone we know nothing about,",
        "who is asking for {intention},",
        "find a {noun} they would also like.",
        "rank these {noun}s for them.",
    ),
    _t(
        "en-log-v1",
        "Recent activity: {history}.",
        "Recent activity: none.",
        "Search text: {intention}.",
        "Next {noun} to recommend:",
        "Ranking of the candidate {noun}s:",
    ),
    _t(
        "en-friend-v1",
        "My friend just watched {history}.",
        "My friend is new to {noun}s.",
        "They told me they want {intention}.",
        "Which {noun} should I recommend to them?",
        "How should I rank these {noun}s for them?",
    ),
    _t(
        "en-sequence-v1",
        "Sequence of {noun}s watched, newest first: {history}.",
        "No {noun}s watched so far.",
        "Stated preference: {intention}.",
        "Predict the next {noun} in the sequence.",
        "Rank the candidates as the next {noun} in the sequence.",
    ),
    _t(
        "en-curator-v1",
        "As a curator, consider a member whose recent favourites are {history}.",
        "As a curator, consider a brand-new member.",
        "The member mentions {intention}.",
        "Choose one {noun} to put at the top of their feed.",
        "Arrange the candidate {noun}s in their feed.",
    ),
    _t(
        "zh-watched-v1",
        "用户最近看过{history}。",
        "这是一位还没有观看记录的新用户。",
        "他现在想看{intention}。",
        "请推荐他接下来最想看的{noun}。",
        "请按与用户的匹配程度给候选{noun}排序。",
    ),
    _t(
        "zh-history-v1",
        "观看历史（最近的在前）：{history}。",
        "没有观看历史。",
        "用户的需求：{intention}。",
        "下一部应该推荐哪部{noun}？",
        "请把给定的{noun}从最合适到最不合适排序。",
    ),
    _t(
        "zh-fan-v1",
        "一位喜欢{history}的观众。",
        "一位第一次来的观众。",
        "他说：{intention}。",
        "推荐一部这位观众会喜欢的{noun}。",
        "为这位观众给每部候选{noun}打分。",
    ),
    _t(
        "zh-assistant-v1",
        "你是推荐助手。用户最近选择了{history}。",
        "你是推荐助手。用户还没有任何记录。",
        "用户提出：{intention}。",
        "选出最符合用户口味的{noun}。",
        "将候选{noun}按契合度排序，最合适的排在最前。",
    ),
    _t(
        "zh-taste-v1",
        "长期偏好（根据{history}判断）。",
        "长期偏好未知。",
        "短期意图：{intention}。",
        "任务：找出同时符合两者的{noun}。",
        "任务：为该用户重新排序候选{noun}。",
    ),
    _t(
        "zh-profile-v1",
        "用户画像：看过{history}。",
        "用户画像：空。",
        "当前需求：{intention}。",
        "输出适合该画像的下一部{noun}。",
        "为该画像对候选{noun}排序。",
    ),
    _t(
        "zh-tonight-v1",
        "最近他一直在看{history}。",
        "他以前没有在这里看过任何内容。",
        "今晚他想看{intention}。",
        "他现在会喜欢哪部{noun}？",
        "这些{noun}中他最喜欢哪一部？",
    ),
    _t(
        "zh-similar-v1",
        "有人喜欢{history}，",
        "有一位我们还不了解的用户，",
        "他想找{intention}，",
        "请找一部他也会喜欢的{noun}。",
        "请为他给这些{noun}排序。",
    ),
    _t(
        "zh-sequence-v1",
        "已观看的{noun}序列（最新的在前）：{history}。",
        "目前还没有观看任何{noun}。",
        "明确的偏好：{intention}。",
        "预测序列中的下一部{noun}。",
        "按作为下一部{noun}的可能性给候选项排序。",
    ),
    _t(
        "zh-friend-v1",
        "我的朋友刚看完{history}。",
        "我的朋友刚开始看{noun}。",
        "他告诉我他想看{intention}。",
        "我该向他推荐哪部{noun}？",
        "我该如何为他排列这些{noun}？",
    ),
)

NOUNS = {"movie": {"en": "movie", "zh": "电影"}, "stock": {"en": "stock", "zh": "股票"}}


@dataclass(frozen=True)
class Instruction:
    text: str
    template: str
    task: str  # "recommend" | "rerank"


def template_language(template: Template) -> str:
    return template.name.split("-", 1)[0]


def choose_template(request_id: str, templates: Sequence[Template] = TEMPLATES, seed: int = 0) -> Template:
    """Deterministic given (seed, request id): a redelivered trigger gets the same template;
    another seed gives another, equally spread assignment."""
    digest = hashlib.blake2b(f"{seed}:{request_id}".encode(), digest_size=4).digest()
    return templates[int.from_bytes(digest, "big") % len(templates)]


def templates_for(languages: str) -> tuple[Template, ...]:
    """The templates in the given comma-separated languages (e.g. "en" or "en,zh")."""
    wanted = {x.strip() for x in languages.split(",") if x.strip()}
    chosen = tuple(t for t in TEMPLATES if template_language(t) in wanted)
    if not chosen:
        known = sorted({template_language(t) for t in TEMPLATES})
        raise ValueError(f"no instruction templates for languages {languages!r}; known: {known}")
    return chosen


def template_by_name(name: str) -> Template:
    for tpl in TEMPLATES:
        if tpl.name == name:
            return tpl
    raise KeyError(f"no instruction template named {name!r}")


def build_instruction(
    *,
    request_id: str,
    history_titles: Sequence[str],
    intention: str | None,
    task: str,
    noun: str = "movie",
    template: Template | None = None,
    seed: int = 0,
) -> Instruction:
    """Compose the instruction text. ``history_titles`` is most recent first; ``intention``
    must already be cleaned (``clean_intention``)."""
    tpl = template or choose_template(request_id, seed=seed)
    zh = template_language(tpl) == "zh"
    word = NOUNS.get(noun, {}).get("zh" if zh else "en", noun)
    parts = []
    if history_titles:
        parts.append(tpl.preference.format(history=_join(history_titles, zh), noun=word))
    else:
        parts.append(tpl.cold.format(noun=word))
    if intention:
        parts.append(tpl.intention.format(intention=f"“{intention}”" if zh else f'"{intention}"', noun=word))
    parts.append((tpl.rerank if task == "rerank" else tpl.recommend).format(noun=word))
    return Instruction(("" if zh else " ").join(parts), tpl.name, task)


def _join(titles: Sequence[str], zh: bool = False) -> str:
    if zh:
        return "、".join(f"《{t}》" for t in titles)
    if len(titles) == 1:
        return titles[0]
    return ", ".join(titles[:-1]) + " and " + titles[-1]
