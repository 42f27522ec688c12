"""The one model-server lifecycle: config → model directory → engine → started.

LLMServer, EmbeddingServer and ImageServer differ in what they serve, not in how a
replica comes up or goes down, so that lives here once. Serve constructs a deployment
with `cls.__new__` and awaits its `async def __init__`, so the engine starts inside
the constructor, bounded by `asyncio.wait_for`. A subclass names its `config_cls`,
overrides `_make_engine` when its engine takes more than (config, model directory),
and extends `__init__` for what it builds once the engine runs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast

from deployments.app_config import ModelAppConfig
from deployments.engines import ModelEngine
from deployments.models.sources import resolve_model_source
from deployments.progress import replica_reporter

ConfigT = TypeVar("ConfigT", bound=ModelAppConfig)
EngineT = TypeVar("EngineT", bound=ModelEngine)

_STEPS = 2  # preparing the model directory, starting the engine


class ModelServer(Generic[ConfigT, EngineT]):
    """Base of the model deployment classes; the builders wrap a subclass with
    serve.deployment and bind it to one application's config."""

    config_cls: ClassVar[type[ModelAppConfig]]

    _config: ConfigT
    _engine: EngineT
    _model_path: Path

    # Serve awaits an async __init__ (see the module docstring); type checkers insist
    # that __init__ returns None, hence the ignore here and in the subclasses.
    async def __init__(  # type: ignore[misc]
        self, config: dict[str, Any], *, engine_cls: Any
    ) -> None:
        """Validates the config, prepares the model directory and starts the engine,
        reporting each step (deployments/progress.py).

        Args:
            config: the application's config as JSON (what the builder bound).
            engine_cls: the engine class (a factory typed per task in engines.py).

        Raises:
            pydantic.ValidationError: the config does not validate.
            ValueError: the model source names no model.
            asyncio.TimeoutError: the engine did not start within `engine.start_timeout_s`.
        """
        self._config = cast(ConfigT, self.config_cls.model_validate(config))
        engine_config = self._config.engine.for_model(self._config.model)
        # Each step goes to the replica log and to /v1/openai/models (progress.py).
        progress = replica_reporter(f"{self._config.model}:{self._config.version}")
        try:
            progress.step("preparing model", 1, _STEPS)
            # Preparing a packaged model (Gemma from its GGUF) can take minutes and
            # lots of RAM, and building a fixture touches the disk: keep the
            # replica's loop free meanwhile.
            self._model_path = await asyncio.to_thread(
                resolve_model_source,
                self._config.model_source,
                lambda doing, step, total: progress.step(f"preparing model: {doing}", step, total),
            )
            progress.step("starting engine", 2, _STEPS)
            self._engine = self._make_engine(engine_cls, engine_config, str(self._model_path))
            await asyncio.wait_for(self._engine.start(), engine_config.start_timeout_s)
        except BaseException:
            progress.clear()
            raise
        progress.finish()

    def _make_engine(self, engine_cls: Any, engine_config: Any, model_path: str) -> EngineT:
        """Constructs the engine (not started). Override for engines that take more."""
        engine: EngineT = engine_cls(engine_config, model_path)
        return engine

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve hands us the user_config: at start and in place whenever it changes.
        The model card in it is for the ingress (it reads it from the controller);
        a task with live settings (LLM adapters) overrides this."""

    async def check_health(self) -> None:
        """Raises only when the engine is dead (Serve then replaces the replica)."""
        await self._engine.check_health()

    def __del__(self) -> None:
        # Serve calls __del__ on graceful shutdown: stop the engine's processes and
        # threads so nothing outlives `serve shutdown`. getattr: __init__ may have
        # failed before the engine existed.
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.shutdown()
