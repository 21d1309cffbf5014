"""One RecBole model trained and scored on our exact split, in RecBole's own environment.

Run by ``instructrec/peers.py`` with the interpreter of ``.venv-recbole`` (RecBole 1.2.1
needs numpy < 2, so it gets an environment of its own); it imports only the standard
library, numpy, torch and RecBole, never the rest of this project.

    python -m model.recbole_peer --data DIR --dataset NAME --model SASRec --seed 0 --out DIR

The atomic file ``DIR/NAME/NAME.inter`` holds ``user_id``, ``item_id`` and
``timestamp``, where the timestamp is each interaction's position in our time order
(ties by file order), so RecBole's leave-one-out split (``LS``, time order) is ours
exactly. RecBole trains with its own loaders, losses and early stopping on validation
(NDCG@10), then this script writes to ``--out``:

- ``scores.npy``: float32 ``[users, items]``, the model's ``full_sort_predict`` for each
  user's test input (history through the validation item for sequential models);
- ``result.json``: the user and item tokens of those rows and columns, every user's
  (validation, test) items as RecBole split them, epochs, seconds, whether early
  stopping ended the training (``converged``), and RecBole's own test figures
  (``recbole_test``: its evaluator, unchanged; sequential models there do not mask the
  user's history).

Compatibility: torch >= 2.6 loads checkpoints weights-only by default, which RecBole's
checkpoints (they hold its config) fail; ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` is set
here for RecBole's own ``torch.load``. Nothing of RecBole is changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

GENERAL = {"Pop", "ItemKNN", "BPR", "LightGCN", "NeuMF", "MultiVAE"}


def config_for(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {
        "data_path": str(args.data),
        "dataset": args.dataset,
        "checkpoint_dir": str(args.out),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": [1, 5, 10],
        "valid_metric": "NDCG@10",
        "seed": args.seed,
        "reproducibility": True,
        "epochs": args.epochs,
        "stopping_step": args.stopping_step,
        "show_progress": False,
        "state": "WARNING",
        "use_gpu": args.gpu,  # RecBole then takes cuda:0
        "eval_batch_size": 4096,
        "save_dataset": False,
        "save_dataloaders": False,
    }
    if args.model not in GENERAL:
        config["train_neg_sample_args"] = None  # the sequential models' CE loss
    config.update(json.loads(args.params or "{}"))
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--stopping-step", type=int, default=10)
    parser.add_argument("--params", default="", help="JSON: more RecBole settings")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--gpu", action="store_true", help="train on cuda:0 (when torch sees a CUDA device)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    config = Config(model=args.model, dataset=args.dataset, config_dict=config_for(args))
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    epochs: list[dict[str, Any]] = []
    train_epoch = trainer._train_epoch

    def counted(*a: Any, **k: Any) -> Any:  # only counts: RecBole's epoch runs unchanged
        started = time.perf_counter()
        loss = train_epoch(*a, **k)
        epochs.append({"seconds": round(time.perf_counter() - started, 2), "loss": _number(loss)})
        print(f"recbole {args.model} seed {args.seed}: epoch {len(epochs)} {epochs[-1]}", file=sys.stderr, flush=True)
        return loss

    trainer._train_epoch = counted
    started = time.perf_counter()
    best_valid, best_valid_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    train_seconds = time.perf_counter() - started
    recbole_test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)

    uid, iid = dataset.uid_field, dataset.iid_field
    users = dataset.field2id_token[uid]
    items = dataset.field2id_token[iid]

    def targets(loader: Any) -> dict[str, str]:
        feat = loader._dataset.inter_feat
        return {str(users[u]): str(items[i]) for u, i in zip(feat[uid].tolist(), feat[iid].tolist(), strict=True)}

    valid, test = targets(valid_data), targets(test_data)
    model.eval()
    rows: list[np.ndarray] = []
    row_users: list[str] = []
    with torch.no_grad():
        for batch in test_data:
            interaction = batch[0].to(config["device"])
            scores = model.full_sort_predict(interaction).reshape(len(interaction), -1)
            rows.append(scores.float().cpu().numpy())
            row_users += [str(users[u]) for u in interaction[uid].tolist()]
    matrix = np.concatenate(rows).astype(np.float32)
    np.save(args.out / "scores.npy", matrix)
    result = {
        "model": args.model,
        "seed": args.seed,
        "users": row_users,
        "items": [str(t) for t in items],
        "valid": valid,
        "test": test,
        "epochs": len(epochs),
        "epoch_log": epochs,
        "max_epochs": args.epochs,
        "converged": len(epochs) < args.epochs,  # early stopping ended it, not the epoch limit
        "best_valid_ndcg@10": _number(best_valid),
        "best_valid": {k: _number(v) for k, v in (best_valid_result or {}).items()},
        "recbole_test": {k: _number(v) for k, v in (recbole_test or {}).items()},
        "train_seconds": round(train_seconds, 1),
        "threads": torch.get_num_threads(),
        "device": str(config["device"]),
    }
    (args.out / "result.json").write_text(json.dumps(result))
    for path in args.out.glob("*.pth"):  # the checkpoint has served its purpose
        path.unlink()
    return 0


def _number(value: Any) -> Any:
    try:
        return round(float(value), 6)
    except (TypeError, ValueError):
        return value


if __name__ == "__main__":
    sys.exit(main())
