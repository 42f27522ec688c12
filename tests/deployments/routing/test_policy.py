"""The routing key of a request, the decision under the load guard, the counts, and
the `routing:` config (its validation and the Serve options it sets)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deployments.contract import GenerateRequest
from deployments.routing.config import PREFIX_ROUTER_CLASS, RoutingConfig
from deployments.routing.policy import (
    DECISION_KINDS,
    Decision,
    PrefixPolicy,
    request_texts,
    routing_texts,
    shared_tree,
)

SYSTEM = "You are the support agent of ACME. " * 20  # 700 characters


def _chat(*contents: str, roles: tuple[str, ...] = ()) -> GenerateRequest:
    roles = roles or tuple("system" if i == 0 else "user" for i in range(len(contents)))
    return GenerateRequest(
        request_id="r",
        task="chat",
        messages=[{"role": role, "content": c} for role, c in zip(roles, contents, strict=True)],
    )


def _completion(*prompts: str | list[int]) -> GenerateRequest:
    return GenerateRequest(request_id="r", task="completion", prompts=list(prompts))


# ---------------------------------------------------------------- the routing key


def test_a_conversation_s_key_extends_the_key_of_its_earlier_turns():
    (first,) = request_texts(_chat(SYSTEM, "hello"), 100_000)
    (later,) = request_texts(
        _chat(SYSTEM, "hello", "hi!", "more", roles=("system", "user", "assistant", "user")),
        100_000,
    )
    assert later.startswith(first) and SYSTEM in first


def test_roles_are_part_of_the_key():
    (as_user,) = request_texts(_chat("same words", roles=("user",)), 1_000)
    (as_system,) = request_texts(_chat("same words", roles=("system",)), 1_000)
    assert as_user != as_system


def test_the_key_is_cut_at_max_chars():
    (key,) = request_texts(_chat(SYSTEM, "x" * 5_000), 1_000)
    assert len(key) == 1_000


def test_completion_prompts_are_their_own_keys_and_token_ids_keep_their_prefixes():
    assert request_texts(_completion("abc", "abd"), 100) == ("abc", "abd")
    (short,) = request_texts(_completion([1, 2, 3]), 100)
    (long,) = request_texts(_completion([1, 2, 3, 4]), 100)
    assert long.startswith(short) and not short.startswith("abc")
    assert request_texts(_completion([0x110000]), 100) == ()


def test_a_call_that_is_not_a_generation_has_no_key():
    assert routing_texts([], 100) == ()
    assert routing_texts(["stats"], 100) == ()
    assert routing_texts([_completion("p")], 100) == ("p",)


# ---------------------------------------------------------------- the decision


def _policy(**fields: object) -> PrefixPolicy[str]:
    return PrefixPolicy(RoutingConfig(policy="prefix_aware", min_match_chars=100, **fields))


def _loads(**loads: int | None):
    return lambda replica: loads.get(replica)


def test_a_shared_prefix_goes_back_to_the_replica_that_served_it():
    policy = _policy()
    texts = request_texts(_chat(SYSTEM, "first question"), 10_000)
    first = policy.decide(texts, {"a", "b"}, _loads())
    assert first == Decision("no_match", (), 0)
    policy.record(first, texts, "b")
    again = request_texts(_chat(SYSTEM, "another question"), 10_000)
    decision = policy.decide(again, {"a", "b"}, _loads(a=0, b=2))
    assert decision.kind == "affinity" and decision.targets == ("b",)
    assert decision.matched_chars > len(SYSTEM)


def test_a_short_shared_prefix_is_no_match():
    policy = _policy()
    policy.record(None, ("short shared",), "a")
    assert policy.decide(("short shared and more",), {"a", "b"}, _loads()).kind == "no_match"


def test_imbalance_falls_back_to_power_of_two():
    policy = _policy(imbalance_threshold=4, imbalance_ratio=1.5)
    policy.record(None, (SYSTEM,), "a")
    assert policy.decide((SYSTEM,), {"a", "b"}, _loads(a=4, b=0)).kind == "affinity"
    assert policy.decide((SYSTEM,), {"a", "b"}, _loads(a=5, b=0)) == Decision(
        "fallback", (), len(SYSTEM)
    )
    # At high load a fixed difference is no imbalance: the ratio guards too.
    assert policy.decide((SYSTEM,), {"a", "b"}, _loads(a=100, b=90)).kind == "affinity"
    # An unknown load counts as 0.
    assert policy.decide((SYSTEM,), {"a", "b"}, _loads(a=5, b=None)).kind == "fallback"


def test_of_several_matching_replicas_those_within_the_guard_are_targets():
    policy = _policy(imbalance_threshold=2)
    policy.record(None, (SYSTEM,), "a")
    policy.record(None, (SYSTEM,), "b")
    decision = policy.decide((SYSTEM,), {"a", "b", "c"}, _loads(a=9, b=1, c=0))
    assert decision.kind == "affinity" and decision.targets == ("b",)


def test_an_adapter_request_matches_only_among_its_candidates():
    policy = _policy()
    policy.record(None, (SYSTEM,), "a")
    # Serve's multiplexing offers b and c only (they hold the adapter).
    assert policy.decide((SYSTEM,), {"b", "c"}, _loads(), adapter=True).kind == "adapter"
    policy.record(None, (SYSTEM,), "c")
    decision = policy.decide((SYSTEM,), {"b", "c"}, _loads(), adapter=True)
    assert decision.kind == "affinity" and decision.targets == ("c",)


def test_decisions_are_counted_by_kind_when_the_request_is_routed():
    policy = _policy()
    assert set(policy.decisions) == set(DECISION_KINDS)
    policy.record(Decision("no_match"), (SYSTEM,), "a")
    policy.record(Decision("affinity", ("a",)), (SYSTEM,), "a")
    # The affinity replica was full: the request went elsewhere.
    policy.record(Decision("affinity", ("a",)), (SYSTEM,), "b")
    policy.record(Decision("unkeyed"), (), "b")
    assert policy.decisions == {
        "affinity": 1,
        "fallback": 1,
        "adapter": 0,
        "no_match": 1,
        "unkeyed": 1,
    }


def test_each_counted_decision_reaches_the_metrics_hook_once():
    seen: list[str] = []
    policy: PrefixPolicy[str] = PrefixPolicy(RoutingConfig(min_match_chars=64), None, seen.append)
    policy.record(Decision("no_match"), (SYSTEM,), "a")
    policy.record(Decision("affinity", ("a",)), (SYSTEM,), "b")  # went elsewhere
    policy.record(None, (SYSTEM,), "a")  # not known any more: not counted
    assert seen == ["no_match", "fallback"]


def test_a_forgotten_replica_s_prefixes_match_elsewhere():
    policy = _policy()
    policy.record(None, (SYSTEM + "a's conversation",), "a")
    policy.record(None, (SYSTEM,), "b")
    assert policy.decide((SYSTEM + "a's conversation",), {"a", "b"}, _loads()).targets == ("a",)
    policy.forget("a")
    decision = policy.decide((SYSTEM + "a's conversation",), {"b"}, _loads())
    assert decision.kind == "affinity" and decision.targets == ("b",)


def test_routers_of_one_deployment_share_a_tree():
    config = RoutingConfig(policy="prefix_aware")
    tree = shared_tree(("app", "LLM:m-1"), config)
    assert shared_tree(("app", "LLM:m-1"), config) is tree
    assert shared_tree(("other", "LLM:m-1"), config) is not tree
    smaller = RoutingConfig(policy="prefix_aware", max_tree_chars=10)
    assert shared_tree(("app", "LLM:m-1"), smaller) is not tree


# ---------------------------------------------------------------- the config


def test_the_default_is_serve_s_own_router_and_sets_no_option():
    assert RoutingConfig().policy == "power_of_two"
    assert RoutingConfig().serve_options() == {}


def test_prefix_aware_sets_serve_s_request_router_config():
    config = RoutingConfig(policy="prefix_aware", imbalance_threshold=3)
    options = config.serve_options()
    router = options["request_router_config"]
    assert router["request_router_class"] == PREFIX_ROUTER_CLASS
    assert router["request_router_kwargs"]["imbalance_threshold"] == 3
    assert "policy" not in router["request_router_kwargs"]
    # What the router's initialize_state gets back validates to the same config.
    assert RoutingConfig(policy="prefix_aware", **router["request_router_kwargs"]) == config


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"policy": "round_robin"}, "policy"),
        ({"imbalance_threshold": 0}, "imbalance_threshold"),
        ({"imbalance_ratio": 0.5}, "imbalance_ratio"),
        ({"min_match_chars": -1}, "min_match_chars"),
        ({"max_tree_chars": 0}, "max_tree_chars"),
        ({"max_tree_nodes": 0}, "max_tree_nodes"),
        ({"max_key_chars": 0}, "max_key_chars"),
        ({"max_tree_size": 10}, "max_tree_size"),
    ],
)
def test_a_bad_value_is_a_validation_error_naming_the_field(fields, message):
    with pytest.raises(ValidationError, match=message):
        RoutingConfig(**fields)


def test_the_config_is_frozen():
    with pytest.raises(ValidationError):
        RoutingConfig().policy = "prefix_aware"  # type: ignore[misc]
