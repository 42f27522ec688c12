"""The pure parts of bench/fleet_bench.py: workload generation, KV sizing arithmetic,
the metrics page's parsing and per-replica figures, ratios, medians and verdicts. No
Ray, no engine, no tokenizer: well under a second."""

from __future__ import annotations

import random
from collections import Counter

import fleet_bench as fb
import pytest

POOL = fb.word_pool(512)
CPT = 4.0


def _build(name: str, params: fb.WorkloadParams | None = None, seed: str = "0:1") -> fb.Workload:
    return fb.build_workload(name, params or fb.WorkloadParams(), seed, CPT, POOL)


def test_text_is_sized_in_tokens_and_seeded():
    a = fb.make_text(random.Random(1), 100, CPT, POOL)
    assert 400 <= len(a) < 400 + 40
    assert a == fb.make_text(random.Random(1), 100, CPT, POOL)
    assert a != fb.make_text(random.Random(2), 100, CPT, POOL)


def test_chat_has_tenants_sharing_system_prompts_and_growing_conversations():
    p = fb.WorkloadParams()
    wl = _build("chat", p)
    assert len(wl.sessions) == 32 and wl.requests == 32 * 6
    by_tenant = Counter(s.tenant for s in wl.sessions)
    assert sorted(by_tenant) == list(range(8)) and set(by_tenant.values()) == {4}
    systems = {s.tenant: s.system for s in wl.sessions}
    assert len(set(systems.values())) == 8
    assert all(s.system == systems[s.tenant] for s in wl.sessions)
    # Each turn's messages extend the previous turn's, answers included.
    s = wl.sessions[0]
    answers = ["first answer", "second answer"]
    m1 = fb.messages_for(s, 1, answers)
    m2 = fb.messages_for(s, 2, answers)
    assert m2[: len(m1)] == m1
    assert [m["role"] for m in m2] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert m2[2]["content"] == "first answer" and m2[-1]["content"] == s.turns[2]


def test_skew_sends_half_of_all_requests_from_one_tenant():
    p = fb.WorkloadParams()
    wl = _build("skew", p)
    requests = Counter()
    for s in wl.sessions:
        requests[s.tenant] += len(s.turns)
    assert requests[0] / wl.requests == pytest.approx(0.5)
    assert set(requests) == set(range(8))
    small = fb.skew_tenants(8, 8, 0.5)
    assert small.count(0) == 4 and sorted(small[4:]) == [1, 2, 3, 4]


def test_rag_draws_documents_at_random_deterministically_per_seed():
    a, b = _build("rag", seed="0:1"), _build("rag", seed="0:1")
    assert [(s.tenant, s.system, s.turns) for s in a.sessions] == [
        (s.tenant, s.system, s.turns) for s in b.sessions
    ]
    docs = Counter(s.tenant for s in a.sessions)
    assert len(a.sessions) == 96 and len(docs) > 10
    assert all(len(s.turns) == 1 for s in a.sessions)
    # Another round: fresh text, so no cache of an earlier round helps.
    c = _build("rag", seed="0:2")
    assert not {s.system for s in a.sessions} & {s.system for s in c.sessions}


def test_control_shares_no_prefix():
    wl = _build("control")
    firsts = {s.system[:40] for s in wl.sessions}
    assert len(firsts) == len(wl.sessions) == 64


def test_scaled_shrinks_counts_not_texts():
    p = fb.WorkloadParams().scaled(0.25)
    assert (p.conversations, p.questions, p.control_requests) == (8, 24, 16)
    assert p.prefix_tokens == 1500 and p.tenants == 8 and p.turns == 6
    with pytest.raises(ValueError):
        _build("nope")


def test_reusable_prefix_tokens():
    p = fb.WorkloadParams()
    assert fb.reusable_prefix_tokens("chat", p) == 8 * 1500 + 32 * 5 * (60 + 16)
    assert fb.reusable_prefix_tokens("skew", p) == fb.reusable_prefix_tokens("chat", p)
    assert fb.reusable_prefix_tokens("rag", p) == 16 * 1500
    assert fb.reusable_prefix_tokens("control", p) == 0


TINY = {
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_size": 128,
    "head_dim": 32,
}
GEMMA = {
    "num_hidden_layers": 18,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "hidden_size": 640,
    "sliding_window": 512,
    "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 3,
}


def test_kv_layout_of_a_full_attention_model():
    lay = fb.kv_layout(TINY, "float32")
    assert lay.layer_token_bytes == 2 * 32 * 2 * 4
    assert lay.groups == (2, 1, 0)
    assert lay.block_bytes == 2 * 128 * 512  # all layers x block x per layer-token
    assert lay.bytes_for(1000, 7) == 8 * 2 * 128 * 512  # ceil(1000 / 128) blocks


def test_kv_layout_of_a_sliding_window_model():
    lay = fb.kv_layout(GEMMA, "bfloat16")
    assert lay.layer_token_bytes == 256 * 2 * 2
    assert lay.groups == (3, 1, 5)
    # full group: ceil(1000/128) = 8; sliding: 5 groups x 2 endpoints x (4 + 1)
    assert lay.blocks_for(1000, 2) == 8 + 5 * 2 * 5
    assert lay.block_bytes == 3 * 128 * 1024


def test_kv_sizing_holds_half_of_the_reusable_prefixes():
    lay = fb.kv_layout(TINY, "float32")
    p = fb.WorkloadParams()
    s = fb.kv_sizing(lay, p, fb.WORKLOADS, max_model_len=4096)
    assert s["target_prefix_tokens"] == round(0.5 * 24160)
    assert s["kv_cache_memory_bytes"] == lay.bytes_for(12080, 20)
    assert all(0.45 <= v["fraction_held"] <= 0.55 for v in s["workloads"].values())
    assert not s["raised_to_one_max_len_request"]
    tiny = fb.kv_sizing(lay, p.scaled(0.1), ["rag"], max_model_len=32768)
    assert tiny["raised_to_one_max_len_request"]
    assert tiny["kv_cache_memory_bytes"] >= lay.bytes_for(32768, 1)


PAGE = """\
# HELP ray_serve_deployment_request_counter_total The number of queries.
ray_serve_deployment_request_counter_total{application="fleet-tiny-p2c",deployment="LLM",replica="r1",route="/"} 5.0
ray_serve_deployment_request_counter_total{application="fleet-tiny-p2c",deployment="LLM",replica="r2",route="/"} 3.0
ray_serve_deployment_request_counter_total{application="openai",deployment="Ingress",replica="i1",route="/"} 8.0
ray_openai_serve_prefix_cache_queries_total{deploy_id="fleet-tiny-p2c",model="m",replica="r1"} 1000.0
ray_openai_serve_prefix_cache_hits_total{deploy_id="fleet-tiny-p2c",model="m",replica="r1"} 250.0
ray_openai_serve_router_decisions_total{deploy_id="fleet-tiny-p2c",kind="affinity"} 4.0
"""


def test_replica_figures_from_metric_deltas():
    before = fb.parse_prometheus(PAGE)
    after_page = (
        PAGE.replace('"r1",route="/"} 5.0', '"r1",route="/"} 11.0')
        .replace('"r2",route="/"} 3.0', '"r2",route="/"} 5.0')
        .replace("} 1000.0", "} 3000.0")
        .replace("} 250.0", "} 1250.0")
        .replace("} 4.0", "} 9.0")
    )
    after = fb.parse_prometheus(after_page)
    f = fb.replica_figures("fleet-tiny-p2c", before, after)
    assert f["requests_counted"] == 8
    assert f["replicas"]["r1"]["share"] == 0.75 and f["replicas"]["r2"]["share"] == 0.25
    assert f["replicas"]["r1"]["hit_rate"] == 0.5
    assert f["replicas"]["r2"]["cache_queries"] == 0.0
    assert f["fleet_hit_rate"] == 0.5
    assert f["busiest_over_least"] == 3.0 and f["max_share"] == 0.75
    assert f["decisions"] == {"affinity": 5.0}


def test_replica_figures_without_the_cache_metrics():
    page = "\n".join(line for line in PAGE.splitlines() if "openai_serve" not in line)
    before = fb.parse_prometheus(page)
    after = fb.parse_prometheus(page.replace("} 5.0", "} 9.0"))
    f = fb.replica_figures("fleet-tiny-p2c", before, after)
    assert f["fleet_hit_rate"] is None and f["decisions"] is None
    assert f["replicas"]["r1"]["hit_rate"] is None
    # One replica took everything: the other is counted with 0.
    assert f["max_share"] == 1.0 and f["busiest_over_least"] is None


def _run(p50, p90, tok_s, hit, balance):
    return {
        "ttft_ms": {"p50": p50, "p90": p90},
        "output_tok_s": tok_s,
        "fleet": {"fleet_hit_rate": hit, "busiest_over_least": balance},
    }


def test_ratios_medians_and_verdicts():
    rounds = [
        fb.round_ratios(_run(50, 100, 120, 0.8, 1.2), _run(100, 200, 100, 0.4, 1.0)),
        fb.round_ratios(_run(60, 90, 130, 0.9, 1.1), _run(100, 100, 100, 0.5, 1.0)),
        fb.round_ratios(_run(70, 300, 110, None, 1.4), _run(100, 100, 100, 0.5, 1.0)),
    ]
    assert rounds[0]["ttft_p50"] == 0.5 and rounds[0]["fleet_hit_rate"] == 2.0
    assert rounds[2]["fleet_hit_rate"] is None
    med = fb.median_ratios(rounds)
    assert med["ttft_p50"] == 0.6 and med["tok_s"] == 1.2 and med["fleet_hit_rate"] == 1.9
    assert fb.verdicts("chat", med, None) == {
        "ttft_p50 <= 0.6x": True,
        "tok_s >= 1.2x": True,
        "fleet_hit_rate >= 1.6x": True,
    }
    v = fb.verdicts("skew", med, 1.6)
    assert v == {"busiest/least <= 1.5 (prefix)": False, "ttft_p90 <= 1.0x": True}
    assert fb.verdicts("control", med, None)["tok_s within 0.97-1.03x"] is False
    assert fb.median([None, 1.0, 3.0]) == 2.0 and fb.median([None]) is None
    assert fb.ratio(1.0, 0.0) is None


def test_compare_over_rounds():
    def pair(prefix, p2c):
        return {
            "prefix": {**prefix, "errors": 0, "fleet": {**prefix["fleet"], "max_share": 0.6}},
            "p2c": {**p2c, "errors": 0, "fleet": {**p2c["fleet"], "max_share": 0.5}},
        }

    rounds = [
        {
            "round": r,
            "runs": {"skew": pair(_run(50, 80, 100, 0.5, b), _run(60, 100, 100, 0.2, 1.0))},
        }
        for r, b in ((1, 1.2), (2, 1.4), (3, 1.9))
    ]
    c = fb.compare(rounds, ["skew", "chat"])
    assert list(c) == ["skew"]
    assert c["skew"]["median_figures"]["prefix"]["busiest_over_least"] == 1.4
    assert c["skew"]["targets"] == {
        "busiest/least <= 1.5 (prefix)": True,
        "ttft_p90 <= 1.0x": True,
    }
    assert len(c["skew"]["per_round"]) == 3


def test_fleet_config_differs_only_in_routing():
    from pathlib import Path

    spec = fb.ModelSpec("tiny", "bench/tiny", "src", Path("/m"), {"max_model_len": 4096}, 0)
    cfg = fb.fleet_config(spec, 1234, {"A": "1"}, {"imbalance_threshold": 4})
    ingress, p2c, prefix = cfg["applications"]
    assert ingress["name"] == "openai"
    assert (p2c["name"], prefix["name"]) == ("fleet-tiny-p2c", "fleet-tiny-prefix")
    assert p2c["args"]["routing"] == {"policy": "power_of_two"}
    assert prefix["args"]["routing"] == {"policy": "prefix_aware", "imbalance_threshold": 4}
    for app in (p2c, prefix):
        assert app["args"]["deployment"]["num_replicas"] == 2
        assert app["args"]["engine"]["cpu_threads"] == 1
    strip = ("name", "model", "routing")
    a = {k: v for k, v in p2c["args"].items() if k not in strip}
    b = {k: v for k, v in prefix["args"].items() if k not in strip}
    assert a == b
