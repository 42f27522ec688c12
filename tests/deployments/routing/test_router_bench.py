"""bench/router_decision.py runs (a small size: its timings are not checked here)."""

from __future__ import annotations

import router_decision


def test_the_decision_benchmark_runs(capsys):
    result = router_decision.main(["--prefixes", "40", "--n", "20", "--replicas", "3"])
    assert result["tree"]["nodes"] > 0 and result["decide_us"]["p99"] > 0
    assert sum(result["decisions"].values()) == 20
    assert '"decide_us"' in capsys.readouterr().out
