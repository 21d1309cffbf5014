"""``make bench``'s report (instructrec/bench.py write_report): markdown with every table
and the three plots it names, written as PNG files. Synthetic figures: this checks the
report, not the speed (that is what `make bench` itself measures)."""

from __future__ import annotations

from pathlib import Path

from instructrec.bench import BenchConfig, write_report


def test_the_report_names_and_writes_its_plots(tmp_path: Path) -> None:
    rows = [
        {
            "concurrency": c,
            "raw_forward_per_s": 4000.0,
            "one_at_a_time_per_s": 1000.0 * c**0.3,
            "batched_per_s": 3800.0,
            "batched_vs_raw": 0.95,
            "batched_vs_one": 3800.0 / (1000.0 * c**0.3),
            "batched_dynamic_padding_per_s": 4200.0,
            "invariant_vs_dynamic": 3800.0 / 4200.0,
        }
        for c in (1, 8, 32)
    ]
    scoring = {"device": "cpu/float32", "torch_threads": 2, "rows": rows}
    ingest = {"naive_faust_events_per_s": 800.0, "ingest_events_per_s": 9000.0, "ingest_batched_events_per_s": 50000.0}
    triggers = {
        "trigger_p50_ms": 140.0,
        "trigger_p99_ms": 380.0,
        "triggers_measured": 3,
        "triggers": 4,
        "triggers_unanswered": 0,
        "trigger_stage_p50_ms": {"stream": 40.0},
        "trigger_latencies_ms": [120.0, 140.0, 380.0],
    }
    report = write_report(scoring, tmp_path, ingest, triggers, BenchConfig(out_dir=tmp_path))
    text = report.read_text()
    assert "| 32 | 4000 |" in text and "| naive Faust agent" in text and "p99 380.0 ms" in text
    for png in ("scoring.png", "latency.png", "ingest.png"):
        assert f"]({png})" in text
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
