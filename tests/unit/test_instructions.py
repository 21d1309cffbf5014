from hypothesis import given
from hypothesis import strategies as st

from model.instructions import TEMPLATES, build_instruction, choose_template, clean_intention


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
    assert len({choose_template(f"r{i}").name for i in range(200)}) == len(TEMPLATES)


def test_intention_is_cleaned_and_capped():
    assert clean_intention("  something\x00 light\n\tfor\u200b tonight ", 100) == "something light for tonight"
    assert clean_intention("\x01\x02", 100) is None
    assert clean_intention(None, 100) is None
    long = clean_intention("x" * 1000, 50)
    assert long is not None and len(long) == 51 and long.endswith("…")


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
