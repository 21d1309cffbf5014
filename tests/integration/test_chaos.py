"""A reduced ``make chaos``: the real processes SIGKILLed (twice each) and SIGTERMed (once
each) at random moments of a replay, then every promise checked."""

from __future__ import annotations

import pytest

from instructrec.chaos import ChaosOptions, print_summary, run_chaos
from instructrec.settings import Settings

pytestmark = pytest.mark.integration

# SIGTERM -> exit 0, at most (README "Guarantees and limits": drain bound).
DRAIN_BOUND_S = 30.0


def test_random_kills_lose_nothing_and_leave_no_trace(tmp_path):
    """On an embedded broker of its own (run_chaos starts one when none is configured)."""
    options = ChaosOptions(
        events=6000, trigger_every=24, rate=400, stream_kills=2, pool_kills=2, terms=1, gap_s=(2.0, 6.0), seed=3
    )
    summary = run_chaos(Settings(state_dir=tmp_path / "state"), options)
    print_summary(summary)
    assert summary["stream_kills"] == 2 and summary["pool_kills"] == 2
    assert summary["triggers"] >= 200
    assert summary["unanswered"] == 0 and summary["answered"] == summary["triggers"], summary
    assert summary["inconsistent_duplicates"] == 0, summary
    assert summary["context_mismatches"] == 0 and summary["users"] > 50, summary
    assert summary["stuck_outbox"] == 0 and summary["stuck_waiting"] == 0, summary
    assert summary["lag"] == {"stream": 0, "pool": 0}, summary
    assert summary["exit_codes"] == {"stream-worker": 0, "scoring-pool": 0}, summary
    terms = summary["sigterm_restarts"]
    assert len(terms) == 2 and all(t["exit_code"] == 0 and t["exit_s"] <= DRAIN_BOUND_S for t in terms), terms
