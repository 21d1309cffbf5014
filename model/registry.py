"""Which model a scoring pool runs: a model directory, or a directory of versions.

``INSTRUCTREC_MODEL_DIR`` may point at one Hugging Face model directory (it has a
``config.json``; its version is ``INSTRUCTREC_MODEL_VERSION``), or at a root whose
subdirectories are versions (``<root>/<version>/config.json``). For a root, the version is
the one named in ``<root>/LATEST`` if that file exists, else the greatest name. Pools
look again every ``INSTRUCTREC_MODEL_POLL_S`` seconds and switch without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model.exceptions import ModelNotFound


@dataclass(frozen=True)
class ModelChoice:
    path: Path
    version: str


def resolve_model(model_dir: Path, default_version: str) -> ModelChoice:
    model_dir = Path(model_dir)
    if (model_dir / "config.json").exists():
        return ModelChoice(model_dir, default_version)
    latest = model_dir / "LATEST"
    if latest.exists():
        version = latest.read_text().strip()
        if not (model_dir / version / "config.json").exists():
            raise ModelNotFound(f"{latest} names {version!r}, but {model_dir / version} holds no model")
        return ModelChoice(model_dir / version, version)
    versions = sorted(p.name for p in model_dir.iterdir() if (p / "config.json").exists()) if model_dir.is_dir() else []
    if not versions:
        raise ModelNotFound(f"{model_dir} holds neither a model (config.json) nor version directories")
    return ModelChoice(model_dir / versions[-1], versions[-1])
