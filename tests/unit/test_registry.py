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
