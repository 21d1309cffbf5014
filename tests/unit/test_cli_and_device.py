import subprocess
import sys

import pytest
import torch

from instructrec.cli import build_parser
from model.device import choose_device

COMMANDS = [
    "run",
    "stream-worker",
    "alerts-worker",
    "pool",
    "replay",
    "trigger",
    "tail",
    "create-topics",
    "train",
    "train-sentiment",
    "broker",
    "bench",
    "eval",
    "chaos",
]


def test_every_command_has_help():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(COMMANDS) == set(sub.choices)
    for name in COMMANDS:
        assert sub.choices[name].format_help().startswith(f"usage: instructrec {name}")


def test_help_runs_as_a_program():
    out = subprocess.run(
        [sys.executable, "-m", "instructrec", "trigger", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "--intention" in out.stdout


def test_components_refuse_to_start_without_a_broker_setting(monkeypatch):
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("KAFKA_", "INSTRUCTREC_"))}
    out = subprocess.run(
        [sys.executable, "-m", "instructrec", "create-topics"], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 2 and "KAFKA_BOOTSTRAP_SERVERS" in out.stderr


def test_cpu_device_is_fp32():
    choice = choose_device("cpu")
    assert choice.device.type == "cpu" and choice.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_auto_picks_cuda_in_half_precision_and_scores():
    from model.scorer import BiEncoderScorer, TextEncoder

    choice = choose_device("auto")
    assert choice.device.type == "cuda" and choice.dtype in (torch.bfloat16, torch.float16)
    scorer = BiEncoderScorer(TextEncoder(device=choice))
    [res] = scorer.score_many(["a space adventure"], [[("1", "Star Wars (1977). Sci-Fi"), ("2", "Babe (1995)")]], [[]])
    assert res.scores[0] > res.scores[1]


def test_the_gpu_check_script_runs_on_cpu(tmp_path):
    from model.scorer import default_model_dir

    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [
            sys.executable,
            "deploy/gpu_check.py",
            "--device",
            "cpu",
            "--batches",
            "1,2",
            "--repeats",
            "1",
            "--pairs",
            "4",
            "--random-weights",
            "--model-dir",
            str(default_model_dir()),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    rows = json.loads(out.read_text())["rows"]
    assert {(r["texts"], r["batch"]) for r in rows} == {
        ("short", 1),
        ("short", 2),
        ("long", 1),
        ("long", 2),
        ("cross-encoder pairs", 4),
    }
    assert all(r["texts_per_s"] > 0 for r in rows)
    assert all(r["texts_per_s"] > 0 for r in rows)


def test_progress_bars_pass_items_through_and_stay_quiet_off_a_terminal(capsys):
    from instructrec.progress import progress

    assert list(progress(iter(range(5)), "replay", unit="msg")) == [0, 1, 2, 3, 4]
    assert capsys.readouterr().err == ""  # stderr is not a terminal here: no bar
