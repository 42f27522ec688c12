"""The batch caller's own logic, on a fake endpoint core (no Ray, no model): a run's
gate, its output rows, and cancel."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from starlette.responses import JSONResponse

from ingress.batches import caller as caller_module
from ingress.batches.caller import LineCaller
from ingress.errors import OpenAIError

ENDPOINT = "/v1/chat/completions"
pytestmark = pytest.mark.anyio


class Core:
    """An endpoint core whose lines wait for `release`; counts the lines running."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.started = 0
        self.cancelled = 0
        self.release = asyncio.Event()

    async def __call__(self, api: Any, ctx: Any, data: dict, request_id: str) -> JSONResponse:
        if data.get("model") == "missing":
            raise OpenAIError("no such model", 404, param="model", code="model_not_found")
        self.started += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        assert ctx.background
        return JSONResponse({"echo": data["n"]})


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch) -> Core:
    fake = Core()
    monkeypatch.setitem(caller_module.CORES, ENDPOINT, (fake, "chat"))
    return fake


def block(start: int, n: int, **body: Any) -> dict[str, Any]:
    return {
        "i": np.arange(start, start + n),
        "custom_id": np.array([f"c-{i}" for i in range(start, start + n)], dtype=object),
        "body": np.array(
            [json.dumps({"n": i, **body}) for i in range(start, start + n)], dtype=object
        ),
    }


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_runs_lines_share_its_gate_and_come_back_as_output_rows(core: Core) -> None:
    caller = LineCaller({})
    first = asyncio.create_task(caller.run("b/1", ENDPOINT, "key", 3, block(0, 4)))
    second = asyncio.create_task(caller.run("b/1", ENDPOINT, "key", 3, block(4, 4)))
    other = asyncio.create_task(caller.run("b/2", ENDPOINT, "key", 2, block(8, 2)))
    await settle()
    assert core.running == 3 + 2  # b/1's gate holds 3 of its 8 lines; b/2 has its own
    core.release.set()
    out = await first
    assert out["i"] == [0, 1, 2, 3] and out["ok"] == [True] * 4
    line = json.loads(out["line"][2])
    assert line["custom_id"] == "c-2" and line["error"] is None
    assert line["response"]["status_code"] == 200 and line["response"]["body"] == {"echo": 2}
    assert (await second)["i"] == [4, 5, 6, 7] and len((await other)["i"]) == 2
    assert core.peak == 5 and not caller.runs  # gates nobody holds are dropped


async def test_a_bad_line_is_an_error_row(core: Core) -> None:
    core.release.set()
    caller = LineCaller({})
    out = await caller.run("b/1", ENDPOINT, "key", 4, block(0, 2, model="missing"))
    assert out["ok"] == [False, False]
    line = json.loads(out["line"][0])
    assert line["response"]["status_code"] == 404
    assert line["error"] == {"code": "model_not_found", "message": "no such model"}
    streamed = await caller.run("b/1", ENDPOINT, "key", 4, block(2, 1, stream=True))
    assert json.loads(streamed["line"][0])["error"]["code"] == "invalid_value"


async def test_cancel_stops_the_runs_lines_and_refuses_its_later_blocks(core: Core) -> None:
    caller = LineCaller({})
    held = asyncio.create_task(caller.run("b/1", ENDPOINT, "key", 2, block(0, 5)))
    kept = asyncio.create_task(caller.run("b/2", ENDPOINT, "key", 2, block(5, 2)))
    await settle()
    assert core.running == 4
    assert caller.cancel("b/1") == 1
    assert await held == {"i": [], "ok": [], "line": []}
    assert core.cancelled == 2 and core.running == 2  # the waiting three never started
    late = await caller.run("b/1", ENDPOINT, "key", 2, block(7, 3))
    assert late == {"i": [], "ok": [], "line": []} and core.started == 4
    core.release.set()
    assert (await kept)["ok"] == [True, True]  # another run is not touched
    assert caller.cancel("nothing running") == 0
