"""Serve deployment options of the model applications: the shared base, the task's
defaults and the config's `deployment:`, merged by the one rule every builder uses
(`merge_options`, in deployments/contract.py because the ingress's builder uses it
too), the binding of a model application, and `ModelAppBuilder`, the one builder the
three tasks' builder.py modules instantiate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from deployments.app_config import ModelAppConfig
from deployments.contract import MODEL_CARD_ENV, MODEL_CARD_KEY, merge_options
from deployments.routing.config import RoutingConfig
from deployments.server_base import ModelServer

if TYPE_CHECKING:  # the builders import ray.serve; this module stays importable without it
    from ray.serve import Application, Deployment


def deployment_name(prefix: str, model: str, version: str) -> str:
    """A readable deployment name from the model name and version.

    Args:
        prefix: the task ("LLM", "Embeddings", "Image").
        model: the public model name, which may carry '/'.
        version: the version label.

    Returns:
        "PREFIX:MODEL-VERSION" with every run of characters Serve does not accept
        in a name replaced by '-'.
    """
    return f"{prefix}:" + re.sub(r"[^A-Za-z0-9._-]+", "-", f"{model}-{version}")


# What every model replica gets unless its config says otherwise.
MODEL_DEPLOYMENT_BASE: dict[str, Any] = {
    "num_replicas": 1,
    "health_check_period_s": 10,
    "health_check_timeout_s": 60,
    "graceful_shutdown_timeout_s": 20,
    "ray_actor_options": {
        "num_cpus": 1,
        "runtime_env": {"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}},
    },
    # "max_queued_requests" is set by `model_options`: it follows the task's (or the
    # config's) max_ongoing_requests, QUEUED_PER_ONGOING times over.
}

# Serve's queue of a model deployment, per caller (each ingress replica's handle), is
# bounded rather than Serve's default of unbounded: past it the caller gets a
# BackPressureError at once, which the ingress answers as a 429 rate_limited with
# Retry-After (ingress/errors.py serve_error), instead of piling up requests that
# would wait out their wait_timeout_s. Two replicas' worth of work may wait: enough to
# ride out a replica starting or a burst, little enough to shed load early.
QUEUED_PER_ONGOING = 2
_SERVE_DEFAULT_MAX_ONGOING = 5  # Serve's own default, for a task that sets none


def model_options(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The Serve options of a model deployment.

    Args:
        defaults: the task's options, over MODEL_DEPLOYMENT_BASE.
        overrides: the config's `deployment:`.

    Returns:
        The merged options (merge_options), with `max_queued_requests` set to
        QUEUED_PER_ONGOING x max_ongoing_requests unless the config sets it (-1 there
        means unbounded, as in Serve).
    """
    options = merge_options(merge_options(MODEL_DEPLOYMENT_BASE, defaults), overrides)
    ongoing = options.get("max_ongoing_requests", _SERVE_DEFAULT_MAX_ONGOING)
    options.setdefault("max_queued_requests", QUEUED_PER_ONGOING * ongoing)
    return options


def bind_model_app(
    server_cls: type[ModelServer[Any, Any]],
    config: ModelAppConfig,
    defaults: dict[str, Any],
    prefix: str,
    *,
    engine_cls: Any = None,
) -> Application:
    """The one way a model application is bound.

    Args:
        server_cls: the task's ModelServer subclass.
        config: the validated application config (it has a `card()`).
        defaults: the task's Serve options, over MODEL_DEPLOYMENT_BASE.
        prefix: the task, for the deployment name.
        engine_cls: the engine class for the server's `engine_cls=`; None keeps
            the server's default (the real engine).

    Returns:
        The bound application: the config's `deployment:` over the defaults
        (`model_options`), a name
        from model and version, and the model card in `user_config` (how the
        ingress learns the catalog, ingress/catalog.py).
    """
    from ray import serve

    options = model_options(defaults, config.deployment)
    # An LLM config's `routing:` sets Serve's request_router_config for `prefix_aware`
    # (deployments/routing); the default sets nothing.
    routing = getattr(config, "routing", None)
    if isinstance(routing, RoutingConfig):
        options = merge_options(options, routing.serve_options())
    options["name"] = deployment_name(prefix, config.model, config.version)
    card = config.card().model_dump(mode="json")
    options["user_config"] = {MODEL_CARD_KEY: card, **config.live_config()}
    # A second copy where a serve_config.yaml `user_config` override cannot reach it
    # (deployments/contract.py MODEL_CARD_ENV); the catalog reads it when the first is
    # gone.
    options = merge_options(
        options,
        {"ray_actor_options": {"runtime_env": {"env_vars": {MODEL_CARD_ENV: json.dumps(card)}}}},
    )
    # Only when given: the server's default is the real engine, and an explicit None
    # would replace it.
    kwargs = {"engine_cls": engine_cls} if engine_cls is not None else {}
    # Ray types serve.deployment as the decorator factory only; given a class it
    # returns the Deployment itself.
    deployment = cast("Deployment", serve.deployment(server_cls))
    return deployment.options(**options).bind(config.model_dump(mode="json"), **kwargs)


EngineClassT = TypeVar("EngineClassT")


class ModelAppBuilder(Generic[EngineClassT]):
    """The one builder of a model application (LLM, embeddings, images): validate the
    serve_config.yaml `args` with the server's own config class, then `bind_model_app`.

    A task's builder.py makes one, typed by its engine class (deployments/engines.py),
    and exposes its two entries as module functions:

    - `build_app(args)`: Serve's entry, the `import_path` of serve_config.yaml. Serve
      accepts only a plain function (not a bound method) of exactly one argument, so
      this is one, made per builder.
    - `build_app_with_engine(args, engine_cls=None)`: the engine seam (tests).
    """

    def __init__(
        self, server_cls: type[ModelServer[Any, Any]], defaults: dict[str, Any], prefix: str
    ) -> None:
        """Args:
        server_cls: the task's ModelServer subclass; its `config_cls` validates the args.
        defaults: the task's Serve options, over MODEL_DEPLOYMENT_BASE.
        prefix: the task, for the deployment name ("LLM", "Embeddings", "Image").
        """
        self.server_cls = server_cls
        self.defaults = defaults
        self.prefix = prefix

        def build_app(args: dict[str, Any]) -> Application:
            """Serve's entry: `build_app_with_engine(args)` with the real engine."""
            return self.build_app_with_engine(args)

        self.build_app: Callable[[dict[str, Any]], Application] = build_app

    def build_app_with_engine(
        self, args: dict[str, Any], engine_cls: EngineClassT | None = None
    ) -> Application:
        """Builds the Serve application for one model version.

        Args:
            args: one application's `args` from serve_config.yaml (the server's
                `config_cls`).
            engine_cls: the engine class the replicas use; None: the server's default
                (the real engine). Tests pass a typed fake (tests/fakes.py).

        Returns:
            The bound server deployment, its model card in `user_config`
            (`bind_model_app`).

        Raises:
            pydantic.ValidationError: `args` does not describe a valid config.
        """
        config = self.server_cls.config_cls.model_validate(args)
        return bind_model_app(
            self.server_cls, config, self.defaults, self.prefix, engine_cls=engine_cls
        )
