"""A starting replica's progress: logged and published step by step, removed once it
started or failed, a publishing failure never fails the start; the line protocol of a
preparation child process; and the server's steps."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import textwrap

import pytest

from deployments import server_base
from deployments.contract import StartupProgress
from deployments.llm.server import LLMServer
from deployments.models import sources
from deployments.progress import (
    ProgressReporter,
    parse_progress_line,
    progress_line,
    replica_reporter,
)
from tests.fakes import FakeEngine, start_server


class Recorder:
    """A KV: what was written under which key, in order (None: deleted)."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, bytes | None]] = []

    def __call__(self, key: str, value: bytes | None) -> None:
        self.writes.append((key, value))

    def steps(self) -> list[str | None]:
        return [
            None if v is None else StartupProgress.model_validate_json(v).describe()
            for _, v in self.writes
        ]


def test_each_step_is_logged_and_published_then_removed(caplog):
    kv = Recorder()
    reporter = ProgressReporter("org/m:1", "startup/app/r1", kv)
    with caplog.at_level(logging.INFO, logger="ray.serve"):
        reporter.step("preparing model: converting weights", 3, 5)
        reporter.finish()
    assert kv.steps() == ["preparing model: converting weights (3/5)", None]
    assert {key for key, _ in kv.writes} == {"startup/app/r1"}
    assert "org/m:1: preparing model: converting weights (3/5)" in caplog.text
    assert "org/m:1: started in" in caplog.text


def test_a_failing_publisher_never_fails_the_start(caplog):
    def broken(key: str, value: bytes | None) -> None:
        raise ConnectionError("GCS gone")

    reporter = ProgressReporter("m", "k", broken)
    reporter.step("starting engine", 2, 2)
    reporter.clear()
    assert "could not publish startup progress" in caplog.text


def test_outside_a_replica_the_reporter_only_logs():
    reporter = replica_reporter("m")
    assert reporter._publish is None
    reporter.step("preparing model", 1, 2)  # no Ray needed


def test_progress_lines_round_trip_and_other_lines_are_not_progress():
    line = progress_line("converting weights", 3, 5)
    assert parse_progress_line(line + "\n") == ("converting weights", 3, 5)
    for other in ("/cache/models/gemma-3-270m", "progress: soon", ""):
        assert parse_progress_line(other) is None


def test_a_preparation_child_reports_its_steps_and_its_directory(tmp_path, monkeypatch):
    (tmp_path / "fake_prepare.py").write_text(
        textwrap.dedent(
            f"""
            print({progress_line("step one", 1, 2)!r}, flush=True)
            print("some library chatter")
            print({progress_line("step two", 2, 2)!r}, flush=True)
            print({str(tmp_path / "model")!r})
            """
        )
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the child imports it by name
    seen: list[tuple[str, int, int]] = []
    path = sources._prepare_in_subprocess("fake_prepare", lambda *step: seen.append(step))
    assert path == tmp_path / "model"
    assert seen == [("step one", 1, 2), ("step two", 2, 2)]

    (tmp_path / "fake_fail.py").write_text("import sys; sys.exit(3)\n")
    with pytest.raises(subprocess.CalledProcessError):
        sources._prepare_in_subprocess("fake_fail")


def _recording(monkeypatch) -> Recorder:
    kv = Recorder()
    monkeypatch.setattr(
        server_base, "replica_reporter", lambda name: ProgressReporter(name, "k", kv)
    )
    return kv


def test_a_server_reports_preparing_then_starting_then_clears(tmp_path, monkeypatch):
    kv = _recording(monkeypatch)
    asyncio.run(start_server(LLMServer, {"model": "m", "model_source": str(tmp_path)}, FakeEngine))
    assert kv.steps() == ["preparing model (1/2)", "starting engine (2/2)", None]


def test_a_failed_start_clears_its_progress(tmp_path, monkeypatch):
    kv = _recording(monkeypatch)
    config = {"model": "m", "model_source": str(tmp_path / "missing")}
    with pytest.raises(ValueError):
        asyncio.run(start_server(LLMServer, config, FakeEngine))
    assert kv.steps() == ["preparing model (1/2)", None]
