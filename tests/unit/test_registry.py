from pathlib import Path

import pytest

from model.exceptions import ModelNotFound
from model.registry import resolve_model


def fake_model(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def test_a_single_model_directory_uses_the_configured_version(tmp_path):
    d = fake_model(tmp_path / "m")
    choice = resolve_model(d, "pretrained-1")
    assert choice.path == d and choice.version == "pretrained-1"


def test_a_root_of_versions_picks_latest_file_else_greatest_name(tmp_path):
    for v in ("v1", "v2", "v10"):
        fake_model(tmp_path / v)
    (tmp_path / "notes").mkdir()
    assert resolve_model(tmp_path, "x").version == "v2"  # greatest name
    (tmp_path / "LATEST").write_text("v10\n")
    choice = resolve_model(tmp_path, "x")
    assert choice.version == "v10" and choice.path == tmp_path / "v10"


def test_missing_models_are_clear_errors(tmp_path):
    with pytest.raises(ModelNotFound):
        resolve_model(tmp_path, "x")
    fake_model(tmp_path / "v1")
    (tmp_path / "LATEST").write_text("v9")
    with pytest.raises(ModelNotFound, match="v9"):
        resolve_model(tmp_path, "x")


class _Saving:
    """Stands in for the encoder and tokenizer of model.train.save_model; while "saving"
    it asks which version a pool watching the root would load."""

    def __init__(self, root, seen):
        self.model = self.tokenizer = self
        self.root, self.seen = root, seen

    def save_pretrained(self, out: str) -> None:
        (Path(out) / "config.json").write_text("{}")
        self.seen.append(resolve_model(self.root, "x").version)


def test_a_version_being_saved_is_never_chosen(tmp_path):
    from model.registry import read_card
    from model.train import save_model

    root = tmp_path / "models"
    fake_model(root / "v1")
    base = fake_model(tmp_path / "base")
    seen: list[str] = []
    save_model(_Saving(root, seen), base, root / "v2", {"version": "v2", "fusion": None})  # type: ignore[arg-type]
    assert seen == ["v1", "v1"]  # v2 has a config.json by then, but under a hidden name
    assert resolve_model(root, "x").version == "v2" and read_card(root / "v2") == {"version": "v2", "fusion": None}
    assert sorted(p.name for p in root.iterdir()) == ["v1", "v2"]  # nothing partial left
    save_model(_Saving(root, seen), base, root / "v2", {"version": "v2", "fusion": None})  # saved again: replaced
    assert sorted(p.name for p in root.iterdir()) == ["v1", "v2"]


def test_latest_is_replaced_in_one_step(tmp_path):
    from model.registry import write_latest

    for v in ("v1", "v2"):
        fake_model(tmp_path / v)
    write_latest(tmp_path, "v1")
    write_latest(tmp_path, "v2")
    assert (tmp_path / "LATEST").read_text() == "v2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "v1", "v2"]
