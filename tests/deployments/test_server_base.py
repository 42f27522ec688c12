"""The one model-server lifecycle: config, model source, served name, bounded start, shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from deployments.images.server import ImageServer
from deployments.llm.server import LLMServer
from tests.fakes import FakeEngine, FakeImageEngine, start_server


def _start(server_cls: Any, config: dict[str, Any], engine_cls: Any) -> Any:
    return asyncio.run(start_server(server_cls, config, engine_cls))


def test_the_engine_gets_the_config_and_the_model_directory(tmp_path):
    server = _start(LLMServer, {"model": "org/m", "model_source": str(tmp_path)}, FakeEngine)
    engine = server._engine
    assert engine.started and engine.model_path == str(tmp_path)
    # The public name is vLLM's served name unless the config says otherwise.
    assert engine.config.served_model_name == "org/m"
    named = _start(
        LLMServer,
        {"model": "org/m", "model_source": str(tmp_path), "engine": {"served_model_name": "own"}},
        FakeEngine,
    )
    assert named._engine.config.served_model_name == "own"


def test_deleting_the_server_shuts_the_engine_down(tmp_path):
    server = _start(ImageServer, {"model": "i", "model_source": str(tmp_path)}, FakeImageEngine)
    engine = server._engine
    server.__del__()
    assert engine.shut_down


class _SlowStart(FakeEngine):
    async def start(self) -> None:
        await asyncio.sleep(10)


def test_engine_start_is_bounded(tmp_path):
    config = {"model": "m", "model_source": str(tmp_path), "engine": {"start_timeout_s": 0.05}}
    with pytest.raises(asyncio.TimeoutError):
        _start(LLMServer, config, _SlowStart)


def test_a_bad_config_or_source_fails_the_replica(tmp_path):
    with pytest.raises(ValidationError):
        _start(LLMServer, {"model": "m"}, FakeEngine)
    with pytest.raises(ValueError, match="not a directory"):
        _start(LLMServer, {"model": "m", "model_source": str(tmp_path / "missing")}, FakeEngine)


def test_reconfigure_accepts_the_published_card(tmp_path):
    server = _start(LLMServer, {"model": "m", "model_source": str(tmp_path)}, FakeEngine)
    assert asyncio.run(server.reconfigure({"openai_serve_model_card": {}})) is None
    asyncio.run(server.check_health())
    stats = server.stats()
    assert stats["unfinished_requests"] == 0 and stats["adapter_loads"] == {}
