import pytest
from hypothesis import given
from hypothesis import strategies as st

from model.instructions import (
    TEMPLATES,
    build_instruction,
    choose_template,
    clean_intention,
    template_by_name,
    template_language,
    templates_for,
)


def test_instruction_names_history_intention_and_task():
    ins = build_instruction(
        request_id="r1",
        history_titles=["Star Wars", "Alien"],
        intention="a 90s comedy",
        task="recommend",
        template=TEMPLATES[0],
    )
    assert "Star Wars" in ins.text and "Alien" in ins.text
    assert '"a 90s comedy"' in ins.text
    assert ins.template == TEMPLATES[0].name and ins.task == "recommend"


def test_cold_start_and_rerank_wording():
    ins = build_instruction(request_id="r", history_titles=[], intention=None, task="rerank", template=TEMPLATES[0])
    assert ins.text.startswith(TEMPLATES[0].cold)
    assert "candidate" in ins.text


def test_template_choice_is_deterministic_per_request_and_spreads():
    assert choose_template("abc") == choose_template("abc")
    assert len({choose_template(f"r{i}").name for i in range(500)}) == len(TEMPLATES)


def test_template_choice_depends_on_the_seed():
    same = sum(choose_template(f"r{i}", seed=1) == choose_template(f"r{i}", seed=1) for i in range(100))
    moved = sum(choose_template(f"r{i}", seed=1) != choose_template(f"r{i}", seed=2) for i in range(100))
    assert same == 100
    assert moved > 80  # 1/22 expected to coincide


def test_at_least_twenty_templates_in_english_and_chinese():
    names = [t.name for t in TEMPLATES]
    assert len(names) >= 20 and len(set(names)) == len(names)
    languages = {template_language(t) for t in TEMPLATES}
    assert languages == {"en", "zh"}
    assert len(templates_for("zh")) >= 8 and len(templates_for("en")) >= 8
    assert templates_for("en,zh") == TEMPLATES
    assert all(template_language(t) == "en" for t in templates_for(" en "))
    with pytest.raises(ValueError, match="no instruction templates"):
        templates_for("fr")


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_every_template_renders_every_part(template):
    for task in ("recommend", "rerank"):
        warm = build_instruction(
            request_id="r", history_titles=["Alien (1979)", "Heat"], intention="a horror film", task=task,
            template=template,
        )  # fmt: skip
        cold = build_instruction(request_id="r", history_titles=[], intention=None, task=task, template=template)
        for ins in (warm, cold):
            assert ins.template == template.name
            assert "{" not in ins.text and "}" not in ins.text
        assert "Alien (1979)" in warm.text and "Heat" in warm.text and "a horror film" in warm.text
        assert "Alien" not in cold.text
        if template_language(template) == "zh":
            assert "《Alien (1979)》" in warm.text and "电影" in warm.text + cold.text
    assert template_by_name(template.name) is template


def test_intention_is_cleaned_and_capped():
    assert clean_intention("  something\x00 light\n\tfor\u200b tonight ", 100) == "something light for tonight"
    assert clean_intention("\x01\x02", 100) is None
    assert clean_intention(None, 100) is None
    text = " ".join(f"w{i}" for i in range(300))
    assert clean_intention(text, 50) == text[:50].rstrip() + "…"


@given(st.text(max_size=500), st.integers(0, 200))
def test_clean_intention_never_leaks_control_characters(text, cap):
    out = clean_intention(text, cap)
    if out is not None:
        assert len(out) <= cap + 1
        assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in out)
        assert out == out.strip()


@given(st.lists(st.text(min_size=1, max_size=30), max_size=6), st.one_of(st.none(), st.text(max_size=50)))
def test_build_instruction_is_total(history, intention):
    ins = build_instruction(
        request_id="r", history_titles=history, intention=clean_intention(intention, 40), task="recommend"
    )
    assert ins.text
    for title in history:
        assert title in ins.text
