"""The pure parts of bench/autoscale_trace.py: the trace (streams and phase at a time),
the replica sample read from Serve's details, the merged timeline, per-phase summaries,
scale times and the drain report. No server, no Ray; well under a second."""

from __future__ import annotations

import itertools

import pytest
from autoscale_trace import (
    Phase,
    Request,
    build_trace,
    drain_report,
    drop_time,
    in_flight_while_stopping,
    markdown,
    merge_timeline,
    phase_at,
    phase_bounds,
    replica_sample,
    scale_events,
    stopping_windows,
    streams_at,
    summarize_phases,
    trace_length,
    ttft_series,
)


def test_default_trace_is_the_issue_s_shape() -> None:
    trace = build_trace()
    assert [(p.name, p.duration_s, p.streams_from, p.streams_to) for p in trace] == [
        ("ramp", 120.0, 1, 24),
        ("hold", 60.0, 24, 24),
        ("low", 90.0, 2, 2),
        ("idle", 45.0, 0, 0),
    ]
    assert trace_length(trace) == 315.0
    assert [(s, e) for _, s, e in phase_bounds(trace)] == [
        (0.0, 120.0),
        (120.0, 180.0),
        (180.0, 270.0),
        (270.0, 315.0),
    ]


def test_a_zero_length_phase_is_left_out() -> None:
    assert [p.name for p in build_trace(hold_s=0, idle_s=0)] == ["ramp", "low"]


def test_streams_follow_the_ramp_one_client_at_a_time() -> None:
    trace = build_trace()
    assert streams_at(trace, 0.0) == 1
    assert streams_at(trace, 5.0) == 1  # the first step comes at 120/23 = 5.2 s
    assert streams_at(trace, 5.3) == 2
    assert streams_at(trace, 60.0) == 12  # 1 + int(23 * 0.5)
    assert streams_at(trace, 119.9) == 23
    assert streams_at(trace, 120.0) == 24  # the hold
    assert streams_at(trace, 179.9) == 24
    assert streams_at(trace, 180.0) == 2  # the drop
    assert streams_at(trace, 270.0) == 0
    assert streams_at(trace, 315.0) == 0  # after the trace
    assert streams_at(trace, -1.0) == 0
    # Never more than one client added per step, never a step back on the way up.
    values = [streams_at(trace, t / 10) for t in range(1200)]
    assert all(0 <= b - a <= 1 for a, b in itertools.pairwise(values))
    assert sorted(set(values)) == list(range(1, 24))


def test_a_falling_ramp_rounds_toward_its_start() -> None:
    trace = [Phase("down", 10.0, 10, 0)]
    assert [streams_at(trace, t) for t in (0.0, 0.5, 1.0, 9.9)] == [10, 10, 9, 1]


def test_phase_at_and_the_load_drop() -> None:
    trace = build_trace()
    assert phase_at(trace, 0.0).name == "ramp"  # type: ignore[union-attr]
    assert phase_at(trace, 120.0).name == "hold"  # type: ignore[union-attr]
    assert phase_at(trace, 269.9).name == "low"  # type: ignore[union-attr]
    assert phase_at(trace, 315.0) is None
    assert drop_time(trace) == 180.0
    assert drop_time(build_trace(hold_s=0)) == 120.0
    assert drop_time([Phase("flat", 10, 4, 4)]) is None
    assert drop_time([]) is None


def _details(states: list[tuple[str, str]], target: int | None = 2) -> dict:
    return {
        "applications": {
            "openai": {"status": "RUNNING", "deployments": {"Ingress": {"replicas": []}}},
            "bench-tiny": {
                "status": "RUNNING",
                "deployments": {
                    "LLM:bench-tiny-llama-1": {
                        "target_num_replicas": target,
                        "replicas": [{"replica_id": rid, "state": st} for rid, st in states],
                    }
                },
            },
        }
    }


def test_replica_sample_counts_states_of_the_app() -> None:
    s = replica_sample(
        _details([("a", "RUNNING"), ("b", "STARTING"), ("c", "STOPPING"), ("d", "RUNNING")]),
        "bench-tiny",
    )
    assert (s["running"], s["starting"], s["stopping"], s["target"]) == (2, 1, 1, 2)
    assert s["replicas"] == {"a": "RUNNING", "b": "STARTING", "c": "STOPPING", "d": "RUNNING"}
    assert s["app_status"] == "RUNNING"
    missing = replica_sample(_details([]), "nope")
    assert (missing["running"], missing["app_status"], missing["target"]) == (0, "MISSING", None)


def _req(
    i: int, start: float, end: float, ttft: float | None = 0.1, ok: bool = True, **kw
) -> Request:
    phase = kw.pop("phase", "ramp")
    return Request(
        request_id=f"as-0-{i}",
        client=0,
        start=start,
        end=end,
        ttft=ttft if ok else None,
        status=200 if ok else 503,
        ok=ok,
        tokens=64 if ok else 0,
        error=None if ok else "HTTP 503: x",
        phase=phase,
        **kw,
    )


def test_merge_takes_the_latest_replica_sample_at_or_before_each_second() -> None:
    client = [{"t": float(t), "streams": t, "in_flight": t} for t in range(4)]
    polled = [
        {"t": 0.5, "running": 1, "starting": 0, "stopping": 0, "target": 1},
        {"t": 1.9, "error": "a failed read is skipped"},
        {"t": 2.0, "running": 1, "starting": 1, "stopping": 0, "target": 2},
    ]
    merged = merge_timeline(client, polled)
    assert [m["running"] for m in merged] == [None, 1, 1, 1]
    assert [m["target"] for m in merged] == [None, 1, 2, 2]
    assert merged[3]["starting"] == 1 and merged[3]["streams"] == 3


def _timeline(rows: list[tuple[float, int, int, int, int]]) -> list[dict]:
    return [
        {"t": t, "running": r, "starting": st, "stopping": sp, "target": tg}
        for t, r, st, sp, tg in rows
    ]


def test_per_phase_summary() -> None:
    trace = [Phase("ramp", 10, 1, 4), Phase("low", 10, 1, 1)]
    requests = [
        _req(0, 0.0, 1.0, 0.1),
        _req(1, 1.0, 2.0, 0.3),
        _req(2, 2.0, 3.0, ok=False),
        _req(3, 11.0, 12.0, 0.2, phase="low"),
    ]
    timeline = _timeline([(0, 1, 0, 0, 1), (5, 1, 1, 0, 2), (9, 2, 0, 0, 2), (12, 2, 0, 1, 1)])
    ramp, low = summarize_phases(trace, requests, timeline)
    assert (ramp["requests"], ramp["ok"], ramp["failures"]) == (3, 2, 1)
    assert ramp["ttft_ms"] == {"p50": 200.0, "p99": 298.0}
    assert ramp["output_tokens"] == 128 and ramp["output_tok_s"] == 12.8
    assert ramp["replicas_running"] == {"min": 1, "max": 2, "end": 2}
    assert ramp["replicas_target_max"] == 2 and not ramp["stopping_seen"]
    assert ramp["error_samples"] == ["HTTP 503: x"]
    assert (low["requests"], low["failures"], low["stopping_seen"]) == (1, 0, True)
    assert low["ttft_ms"]["p50"] == 200.0


def test_scale_times_up_from_the_start_down_from_the_drop() -> None:
    timeline = _timeline(
        [
            (0, 1, 0, 0, 1),
            (10, 1, 0, 0, 2),  # decision
            (12, 1, 1, 0, 2),
            (30, 2, 0, 0, 2),  # serving
            (40, 2, 0, 0, 3),
            (60, 3, 0, 0, 3),
            (100, 3, 0, 0, 3),  # the drop at 100
            (120, 3, 0, 0, 1),
            (121, 1, 0, 2, 1),
            (130, 1, 0, 0, 1),
        ]
    )
    ev = scale_events(timeline, 100.0, min_replicas=1, max_replicas=3)
    assert ev["up"] == {
        "2": {"target_s": 10.0, "running_s": 30.0},
        "3": {"target_s": 40.0, "running_s": 60.0},
    }
    # ≤ 2 and ≤ 1 come at once: Serve stops both replicas together; "replicas" waits
    # for the STOPPING ones to be gone.
    assert ev["down"] == {
        "2": {"target_s": 20.0, "replicas_s": 30.0},
        "1": {"target_s": 20.0, "replicas_s": 30.0},
    }
    assert (ev["max_running"], ev["running_at_end"]) == (3, 1)
    assert [c["t"] for c in ev["changes"]] == [0, 10, 12, 30, 40, 60, 120, 121, 130]


def test_scale_times_are_none_when_it_never_happens() -> None:
    ev = scale_events(_timeline([(0, 1, 0, 0, 1), (50, 1, 0, 0, 1)]), 20.0, 1, 3)
    assert ev["up"]["2"] == {"target_s": None, "running_s": None}
    # The first sample at or after the drop (20 s) is the one at 50 s.
    assert ev["down"]["1"] == {"target_s": 30.0, "replicas_s": 30.0}
    assert scale_events([], None, 1, 3)["down"] == {}


def _samples(rows: list[tuple[float, dict[str, str]]]) -> list[dict]:
    return [{"t": t, "replicas": reps} for t, reps in rows]


def test_stopping_windows_and_the_requests_across_them() -> None:
    samples = _samples(
        [
            (0.0, {"a": "RUNNING", "b": "RUNNING"}),
            (1.0, {"a": "RUNNING", "b": "STOPPING"}),
            (2.0, {"a": "RUNNING", "b": "STOPPING"}),
            (3.0, {"a": "RUNNING"}),
        ]
    )
    windows = stopping_windows(samples)
    assert windows == {"b": {"last_running_s": 0.0, "first_s": 1.0, "last_s": 2.0, "gone_s": 3.0}}
    requests = [
        _req(0, 0.0, 0.9),  # over before
        _req(1, 0.5, 1.5),  # across the stop
        _req(2, 2.5, 2.8),  # inside the window (on the other replica)
        _req(3, 3.0, 4.0),  # after it was gone
        _req(4, 0.8, 1.2, ok=False),
    ]
    across = in_flight_while_stopping(requests, windows)
    assert [r.request_id for r in across] == ["as-0-1", "as-0-2", "as-0-4"]
    drain = drain_report(requests, windows)
    assert drain["requests_in_flight_while_a_replica_stopped"] == 3
    assert drain["of_those_failed"] == 1
    b = drain["replicas_stopped"]["b"]
    # From its last RUNNING sample (0.0) to gone (3.0): all but the one sent at 3.0.
    assert (b["requests_in_flight"], b["of_those_failed"]) == (4, 1)
    assert (b["last_running_s"], b["gone_s"]) == (0.0, 3.0)


def test_stopping_window_still_open_at_the_end() -> None:
    windows = stopping_windows(_samples([(0.0, {"a": "STOPPING"}), (1.0, {"a": "STOPPING"})]))
    assert windows == {"a": {"last_running_s": None, "first_s": 0.0, "last_s": 1.0, "gone_s": None}}


def test_ttft_series_buckets_by_send_time() -> None:
    series = ttft_series([_req(0, 0.2, 1, 0.1), _req(1, 0.7, 1, 0.3), _req(2, 2.5, 3, ok=False)])
    assert series == [
        {"t": 0.0, "sent": 2, "failed": 0, "ttft_ms_p50": 200.0, "ttft_ms_max": 300.0},
        {"t": 2.0, "sent": 1, "failed": 1, "ttft_ms_p50": None, "ttft_ms_max": None},
    ]


@pytest.mark.parametrize("failed", [False, True])
def test_markdown_renders_a_report(failed: bool) -> None:
    trace = [Phase("ramp", 10, 1, 4), Phase("low", 20, 1, 1)]
    requests = [_req(0, 0.0, 1.0), _req(1, 11.0, 12.0, phase="low")]
    timeline = [
        {"t": float(t), "phase": "ramp" if t < 10 else "low", "streams": 1, "in_flight": 1}
        for t in range(30)
    ]
    timeline = merge_timeline(
        timeline, [{"t": 0.0, "running": 1, "starting": 0, "stopping": 0, "target": 1}]
    )
    report = {
        "started": "20260101-000000",
        "machine": "test",
        "client_scheduling": "normal",
        "settings": {
            "model": "m",
            "model_source": "fixture:x",
            "max_tokens": 64,
            "ray_num_cpus": 8,
            "deployment": {"max_ongoing_requests": 16},
        },
        "trace": [
            {
                "name": p.name,
                "duration_s": p.duration_s,
                "streams_from": p.streams_from,
                "streams_to": p.streams_to,
            }
            for p in trace
        ],
        "drop_s": 10.0,
        "phases": summarize_phases(trace, requests, timeline),
        "scale": scale_events(timeline, 10.0, 1, 3),
        "drain": drain_report(requests, {}),
        "timeline": timeline,
        "ttft_series": ttft_series(requests),
        "stop": {"stop_s": 3.0, "clean": True},
    }
    if failed:
        report["failure"] = "RuntimeError: boom"
    md = markdown(report)
    assert "| ramp | 10 | 1→4 | 1 | 0 |" in md
    assert "| 20 | low | 1 | 1 | 1 | 0 | 0 | 1 |" in md
    assert "no process left" in md
    assert ("**FAILED**" in md) is failed


def test_requests_are_stored_as_rows_with_the_failures_errors():
    from autoscale_trace import REQUEST_COLUMNS, Request, compact_requests

    good = Request("r0", 0, 0.12345, 0.5, 0.0456, 200, True, 64, None, "ramp")
    bad = Request("r1", 1, 1.0, 1.2, None, 503, False, 0, "status 503", "hold")
    stored = compact_requests([good, bad])
    assert stored["columns"] == list(REQUEST_COLUMNS)
    assert stored["rows"] == [
        [0, 0.123, 0.5, 0.046, 200, 64, "ramp"],
        [1, 1.0, 1.2, None, 503, 0, "hold"],
    ]
    assert stored["errors"] == {"1": "status 503"}
