"""`cpu_threads`: the engine's OpenMP threads on CPU (deployments/cpu_threads.py)."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from deployments.cpu_threads import apply_cpu_threads, thread_count
from deployments.embeddings.config import EmbeddingEngineConfig
from deployments.llm.config import EngineConfig


def test_all_is_every_cpu_the_process_may_run_on():
    assert thread_count("all", allowed_cpus=6) == 6
    assert thread_count("all") == len(os.sched_getaffinity(0))


def test_a_count_is_taken_as_is_and_none_leaves_the_environment():
    assert thread_count(3, allowed_cpus=2) == 3
    assert thread_count(None, allowed_cpus=2) is None


def test_applied_on_cpu_only(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert apply_cpu_threads(None, cuda=False) is None
    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert apply_cpu_threads(4, cuda=True) is None
    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert apply_cpu_threads(4, cuda=False) == 4
    assert os.environ["OMP_NUM_THREADS"] == "4"


@pytest.mark.parametrize("config", [EngineConfig, EmbeddingEngineConfig])
def test_both_vllm_engines_take_it(config):
    assert config(cpu_threads="all").cpu_threads == "all"
    assert config(cpu_threads=2).cpu_threads == 2
    assert config().cpu_threads is None


@pytest.mark.parametrize("bad", [0, -1, 2000, "many", "2", True, 1.5])
def test_a_bad_value_is_a_config_error(bad):
    with pytest.raises(ValidationError, match="cpu_threads"):
        EngineConfig(cpu_threads=bad)
