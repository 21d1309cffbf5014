"""Which model a scoring pool runs: a model directory, or a directory of versions.

``INSTRUCTREC_MODEL_DIR`` may point at one Hugging Face model directory (it has a
``config.json``; its version is ``INSTRUCTREC_MODEL_VERSION``), or at a root whose
subdirectories are versions (``<root>/<version>/config.json``). For a root, the version is
the one named in ``<root>/LATEST`` if that file exists, else the greatest name. Pools
look again every ``INSTRUCTREC_MODEL_POLL_S`` seconds and switch without a restart.

A version appears whole or not at all: ``model.train.save_model`` writes it under a
hidden name (``.<version>.partial-<pid>``, never a candidate) and renames it into place,
and ``write_latest`` replaces LATEST in one step.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.exceptions import ModelNotFound
from model.features import check_weights

# A trained version's card (model/train.py writes it; pools read its fusion weights).
MODEL_CARD = "instructrec.json"


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
    versions = (
        sorted(p.name for p in model_dir.iterdir() if not p.name.startswith(".") and (p / "config.json").exists())
        if model_dir.is_dir()
        else []
    )
    if not versions:
        raise ModelNotFound(f"{model_dir} holds neither a model (config.json) nor version directories")
    return ModelChoice(model_dir / versions[-1], versions[-1])


def write_latest(root: Path, version: str) -> None:
    """Point ``<root>/LATEST`` at ``version`` in one step (a pool never reads it empty)."""
    tmp = Path(root) / f".LATEST.{os.getpid()}.tmp"
    tmp.write_text(version + "\n")
    tmp.replace(Path(root) / "LATEST")


def write_card(out_dir: Path, card: dict[str, Any]) -> None:
    """Write the card atomically: a pool never reads half of it."""
    tmp = out_dir / (MODEL_CARD + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, ensure_ascii=False, sort_keys=True))
    tmp.replace(out_dir / MODEL_CARD)


def read_card(model_dir: Path) -> dict[str, Any] | None:
    """A version's card, its fusion weights checked; None for a plain model directory."""
    path = Path(model_dir) / MODEL_CARD
    if not path.exists():
        return None
    card = json.loads(path.read_text())
    if card.get("fusion") is not None:
        try:
            card["fusion"] = check_weights(card["fusion"])
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    return card
