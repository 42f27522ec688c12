"""bench/router_decision.py runs (a small size: its timings are not checked here)."""

from __future__ import annotations

import router_decision


def test_the_decision_benchmark_runs(capsys, tmp_path):
    result = router_decision.main(
        ["--prefixes", "40", "--n", "20", "--replicas", "3", "--out", str(tmp_path)]
    )
    assert result["tree"]["nodes"] > 0 and result["decide_us"]["p99"] > 0
    assert sum(result["decisions"].values()) == 20
    assert '"decide_us"' in capsys.readouterr().out
    (written,) = tmp_path.glob("router-decision-*.json")
    assert '"decide_us"' in written.read_text()
