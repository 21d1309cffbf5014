"""RecBole's own models as peers in ``make eval``, trained and scored on our exact split.

RecBole 1.2.1 needs numpy < 2, so it runs in an environment of its own
(``.venv-recbole``, made by ``make peers-env`` from the ``peers`` extra in pyproject.toml)
as a subprocess: ``model/recbole_peer.py`` trains one model with RecBole's loaders,
losses and early stopping and returns its full score matrix. Here, in our environment:

- the data: ``ml100k-exact.inter``, our interactions with the timestamp replaced by their
  position in our time order, so RecBole's time-ordered leave-one-out is our split;
- the proof: every user's (validation, test) pair as RecBole split them must equal ours,
  or the peer is refused (:class:`SplitMismatch`), in this code path, every run;
- the cache: a peer's scores are kept under ``.data/peers/`` by (model, settings, seed,
  data hash, RecBole version, runner hash); a rerun reads them back and its row says so;
- the scorer: our protocols (masking, sampled negatives, ties against the target) are
  applied to RecBole's scores exactly as to every other method's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.data import Dataset
from model.evaluation import Scorer, UserSplit

RECBOLE_VERSION = "1.2.1"
DATASET = "ml100k-exact"
RUNNER = Path(__file__).resolve().parent.parent / "model" / "recbole_peer.py"


@dataclass(frozen=True)
class PeerSpec:
    model: str
    epochs: int = 300
    stopping_step: int = 10
    params: dict[str, Any] = field(default_factory=dict)
    trained: bool = True  # False: closed form (Pop, ItemKNN), one run whatever the seeds
    cpu_epochs: int | None = None  # the cap without a CUDA device (None: early stopping only)

    @property
    def name(self) -> str:
        return f"recbole-{self.model.lower()}"


# RecBole's own settings per model (recbole/properties/model/*.yaml). RecBole trains a
# sequential model on every prefix of every user as its own 50-long sequence with the
# loss on its last position (97,171 sequences an epoch, against the 943 of our SASRec,
# which has a loss at every position): on 2 CPU cores an epoch took 88 s (GRU4Rec) and
# 265 s (SASRec; 59 % backward, 34 % forward, a fifth of it dropout's random masks). So
# without a CUDA device these three stop at a few epochs, reported as not converged.
DEFAULT_PEERS: tuple[PeerSpec, ...] = (
    PeerSpec("Pop", epochs=1, trained=False),
    PeerSpec("ItemKNN", epochs=1, trained=False),
    PeerSpec("BPR"),
    PeerSpec("GRU4Rec", cpu_epochs=3),
    PeerSpec("SASRec", cpu_epochs=1),
    PeerSpec("BERT4Rec", cpu_epochs=1),
)


class SplitMismatch(RuntimeError):
    """RecBole split some user's interactions otherwise than our leave-one-out."""


class PeerFailed(RuntimeError):
    """The RecBole subprocess failed; its last output lines say why."""


@dataclass
class PeerRun:
    spec: PeerSpec
    seed: int
    result: dict[str, Any]
    scores: Any  # numpy float32 [users, items]
    cached: bool
    seconds: float

    @property
    def epochs(self) -> int:
        return int(self.result["epochs"])

    @property
    def converged(self) -> bool:
        return bool(self.result["converged"]) or not self.spec.trained

    def scorer(self) -> Scorer:
        rows = {u: n for n, u in enumerate(self.result["users"])}
        cols = {item: n for n, item in enumerate(self.result["items"])}
        scores = self.scores

        def score(split: UserSplit, candidates: Sequence[str]) -> list[float]:
            row = scores[rows[split.user_id]]
            # an item RecBole never saw (not in the interactions) cannot be ranked above anything
            return [float(row[cols[i]]) if i in cols else float("-inf") for i in candidates]

        return score


def write_inter(dataset: Dataset, root: Path) -> str:
    """The atomic file RecBole reads; returns the sha256 of its bytes."""
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += [f"{x.user_id}\t{x.item_id}\t{n}" for n, x in enumerate(dataset.interactions)]
    body = ("\n".join(lines) + "\n").encode()
    path = root / DATASET / f"{DATASET}.inter"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_bytes() != body:
        path.write_bytes(body)
    return hashlib.sha256(body).hexdigest()


def cache_key(spec: PeerSpec, seed: int, data_hash: str) -> str:
    what = {
        "model": spec.model,
        "epochs": spec.epochs,
        "stopping_step": spec.stopping_step,
        "params": spec.params,
        "seed": seed,
        "data": data_hash,
        "recbole": RECBOLE_VERSION,
        "runner": hashlib.sha256(RUNNER.read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def check_split(result: dict[str, Any], splits: Sequence[UserSplit]) -> None:
    """Every user's (validation, test) items as RecBole split them equal ours."""
    valid, test = result["valid"], result["test"]
    wrong = [
        (s.user_id, (s.valid, s.test), (valid.get(s.user_id), test.get(s.user_id)))
        for s in splits
        if valid.get(s.user_id) != s.valid or test.get(s.user_id) != s.test
    ]
    extra = set(test) - {s.user_id for s in splits}
    if wrong or extra:
        raise SplitMismatch(
            f"RecBole's split differs from ours for {len(wrong)} of {len(splits)} users "
            f"(user, ours, recbole): {wrong[:3]}; users only RecBole has: {sorted(extra)[:3]}"
        )


def recbole_python() -> Path:
    """The RecBole environment's interpreter (``make peers-env``), or INSTRUCTREC_RECBOLE_PYTHON."""
    return Path(os.environ.get("INSTRUCTREC_RECBOLE_PYTHON", RUNNER.parent.parent / ".venv-recbole" / "bin" / "python"))


def run_peer(
    spec: PeerSpec,
    seed: int,
    dataset: Dataset,
    splits: Sequence[UserSplit],
    work: Path = Path(".data/peers"),
    python: Path | None = None,
    threads: int = 0,
    gpu: bool = False,
) -> PeerRun:
    """Train and score ``spec`` with RecBole (or read its cached run), and check its split."""
    import numpy as np

    data_hash = write_inter(dataset, work / "data")
    out = work / f"{spec.model}-s{seed}-{cache_key(spec, seed, data_hash)}"
    cached = (out / "result.json").exists() and (out / "scores.npy").exists()
    started = time.perf_counter()
    if not cached:
        python = python or recbole_python()
        if not python.exists():
            raise PeerFailed(f"no RecBole environment at {python}: run `make peers-env`")
        cmd = [
            str(python),
            str(RUNNER),
            "--data",
            str((work / "data").resolve()),
            "--dataset",
            DATASET,
            "--model",
            spec.model,
            "--seed",
            str(seed),
            "--epochs",
            str(spec.epochs),
            "--stopping-step",
            str(spec.stopping_step),
            "--params",
            json.dumps(spec.params),
            "--threads",
            str(threads),
            "--out",
            str(out.resolve()),
            *(["--gpu"] if gpu else []),
        ]
        out.mkdir(parents=True, exist_ok=True)
        # in the run's own directory: RecBole writes its TensorBoard log under the cwd
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=out)
        shutil.rmtree(out / "log_tensorboard", ignore_errors=True)
        if proc.returncode != 0 or not (out / "result.json").exists():
            tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-15:])
            raise PeerFailed(f"{spec.name} seed {seed} exited {proc.returncode}:\n{tail}")
    result = json.loads((out / "result.json").read_text())
    check_split(result, splits)
    scores = np.load(out / "scores.npy")
    return PeerRun(spec, seed, result, scores, cached, round(time.perf_counter() - started, 1))


def pick_retriever(peers: Mapping[str, Sequence[PeerRun]]) -> PeerRun | None:
    """The best converged peer by validation NDCG@10 (mean over its seeds; never a test
    figure), as its first seed's run; None when no peer converged."""
    converged = {name: runs for name, runs in peers.items() if runs and all(r.converged for r in runs)}
    if not converged:
        return None

    def valid(runs: Sequence[PeerRun]) -> float:
        return sum(float(r.result.get("best_valid_ndcg@10") or 0.0) for r in runs) / len(runs)

    return converged[max(converged, key=lambda name: valid(converged[name]))][0]


def hard_negatives(run: PeerRun, splits: Sequence[UserSplit], n: int = 9) -> dict[str, list[str]]:
    """Per user, the ``n`` items ``run`` ranks highest among those the user never had
    (training, validation and test items all left out); ties in catalog-id order."""
    import numpy as np

    rows = {u: k for k, u in enumerate(run.result["users"])}
    items: list[str] = run.result["items"]
    real = np.array([not t.startswith("[") for t in items])  # RecBole's [PAD] column
    out: dict[str, list[str]] = {}
    for split in splits:
        scores = np.where(real, run.scores[rows[split.user_id]].astype(np.float64), -np.inf)
        had = {*split.seen_before_test, split.test}
        picked: list[str] = []
        for col in np.argsort(-scores, kind="stable"):
            if items[col] not in had and real[col]:
                picked.append(items[col])
                if len(picked) == n:
                    break
        out[split.user_id] = picked
    return out


def peer_summary(runs: Sequence[PeerRun]) -> dict[str, Any]:
    """What a report says of one peer over its seeds."""
    first = runs[0]
    return {
        "method": first.spec.name,
        "seeds": len(runs),
        "epochs": [r.epochs for r in runs],
        "converged": all(r.converged for r in runs),
        "train_seconds": [r.result.get("train_seconds") for r in runs],
        "cached": all(r.cached for r in runs),
        "recbole_test_ndcg@10": [r.result.get("recbole_test", {}).get("ndcg@10") for r in runs],
        "recbole_test_hit@10": [r.result.get("recbole_test", {}).get("hit@10") for r in runs],
    }


if __name__ == "__main__":  # python -m instructrec.peers MODEL [SEED]: one peer, for a look
    from instructrec.settings import Settings
    from model.data import fetch_ml100k, load_ml100k
    from model.evaluation import leave_one_out

    settings = Settings()
    ds = load_ml100k(fetch_ml100k(settings.data_dir).parent)
    spec = next(p for p in DEFAULT_PEERS if p.model == sys.argv[1])
    run = run_peer(spec, int(sys.argv[2]) if len(sys.argv) > 2 else 0, ds, leave_one_out(ds))
    print(json.dumps(peer_summary([run])))
