"""The `routing:` key of an LLM application: the default binds exactly the Serve
options it bound before routing existed (no request_router_config: Serve's own
router); `prefix_aware` sets Serve's request_router_config to our router, which Serve
can serialise and rebuild; a bad value is a deploy-time ValidationError."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from deployments.llm.builder import LLM_DEPLOYMENT_DEFAULTS
from deployments.llm.config import LLMAppConfig
from deployments.llm.server import LLMServer
from deployments.options import bind_model_app
from deployments.routing.config import PREFIX_ROUTER_CLASS, RoutingConfig


def _config(**fields: Any) -> LLMAppConfig:
    return LLMAppConfig(model="org/m", version="2", model_source="/tmp", **fields)


class _Recorder:
    """Stands in for serve.deployment(cls): records the options bind_model_app sets."""

    def __init__(self) -> None:
        self.options_seen: dict[str, Any] = {}

    def __call__(self, cls: type) -> _Recorder:
        return self

    def options(self, **options: Any) -> _Recorder:
        self.options_seen = options
        return self

    def bind(self, *args: Any, **kwargs: Any) -> None:
        return None


def _options(monkeypatch: pytest.MonkeyPatch, config: LLMAppConfig) -> dict[str, Any]:
    recorder = _Recorder()
    monkeypatch.setattr("ray.serve.deployment", recorder)
    bind_model_app(LLMServer, config, LLM_DEPLOYMENT_DEFAULTS, "LLM")
    return recorder.options_seen


def test_the_default_routing_is_serve_s_own_and_adds_no_option(monkeypatch):
    assert _config().routing == RoutingConfig()
    default = _options(monkeypatch, _config())
    assert "request_router_config" not in default
    # Knobs of the prefix-aware router change nothing while the policy is the default.
    tuned = _options(monkeypatch, _config(routing={"imbalance_threshold": 3}))
    assert tuned == default


def test_prefix_aware_sets_only_serve_s_request_router_config(monkeypatch):
    default = _options(monkeypatch, _config())
    options = _options(
        monkeypatch, _config(routing={"policy": "prefix_aware", "imbalance_threshold": 3})
    )
    router = options.pop("request_router_config")
    assert router["request_router_class"] == PREFIX_ROUTER_CLASS
    assert router["request_router_kwargs"]["imbalance_threshold"] == 3
    assert options == default


def test_serve_binds_the_router_and_rebuilds_it_where_the_handle_runs():
    app = bind_model_app(
        LLMServer, _config(routing={"policy": "prefix_aware"}), LLM_DEPLOYMENT_DEFAULTS, "LLM"
    )
    router_config = app._bound_deployment._deployment_config.request_router_config
    assert router_config.request_router_class == PREFIX_ROUTER_CLASS
    assert not router_config.is_default_request_router()
    # Serve pickles the class by value at bind time and unpickles it in each handle's
    # process: the copy must still build and decide.
    cls = router_config.get_request_router_class()
    assert cls.__name__ == "PrefixAwareRequestRouter"

    from ray.serve._private.common import DeploymentHandleSource, DeploymentID

    async def main() -> None:
        router = cls(
            deployment_id=DeploymentID(name="LLM:org-m-2", app_name="m-2"),
            handle_source=DeploymentHandleSource.REPLICA,
            use_replica_queue_len_cache=True,
        )
        router.initialize_state(**router_config.request_router_kwargs)
        assert router.decisions["affinity"] == 0
        assert await router.choose_replicas([], None) == []

    asyncio.run(main())


def test_default_binding_keeps_serve_s_default_router():
    app = bind_model_app(LLMServer, _config(), LLM_DEPLOYMENT_DEFAULTS, "LLM")
    router_config = app._bound_deployment._deployment_config.request_router_config
    assert router_config.is_default_request_router()


@pytest.mark.parametrize(
    "routing, field",
    [
        ({"policy": "least_loaded"}, "routing.policy"),
        ({"policy": "prefix_aware", "imbalance_threshold": 0}, "routing.imbalance_threshold"),
        ({"max_tree_chars": -5}, "routing.max_tree_chars"),
        ({"threshold": 1}, "routing.threshold"),
    ],
)
def test_a_bad_routing_value_fails_the_config(routing, field):
    with pytest.raises(ValidationError, match=field):
        _config(routing=routing)


def test_routing_and_a_request_router_config_of_its_own_conflict():
    with pytest.raises(ValidationError, match="request_router_config"):
        _config(
            routing={"policy": "prefix_aware"},
            deployment={"request_router_config": {"request_router_class": "x.Y"}},
        )
    # The default leaves a config's own request_router_config alone.
    _config(deployment={"request_router_config": {"request_routing_stats_period_s": 5}})
