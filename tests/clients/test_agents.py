"""The OpenAI Agents SDK (`openai-agents`, pinned in pyproject.toml's `test` extra) against
the real server: an agent with one function tool, on both of the SDK's OpenAI models —
`OpenAIChatCompletionsModel` (`POST /chat/completions`) and its default,
`OpenAIResponsesModel` (`POST /responses`). The tiny random model calls a tool only when
forced (`tool_choice="required"`: the server constrains its output to the tool's
schema), so every run forces the call; the checks are that the tool ran on arguments
that parse, and that its result went where the SDK sends it (the run's final output, or
the next model request)."""

from __future__ import annotations

import json
from typing import Literal

import httpx
import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from agents.items import MessageOutputItem, ToolCallItem, ToolCallOutputItem
from pydantic import BaseModel

from tests.conftest import TINY_MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

# Tracing uploads spans to OpenAI's platform: off, as for any self-hosted model.
set_tracing_disabled(True)

APIS = ["chat_completions", "responses"]
QUESTION = "What is the weather in Paris?"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recorder:
    """The JSON bodies the SDK sends, in order (an httpx request hook)."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.bodies.append(json.loads(request.content) if request.content else {})


def _agent(base_url: str, api: str, recorder: Recorder, calls: list, **kwargs) -> Agent:
    client = openai.AsyncOpenAI(
        base_url=base_url,
        api_key="unused",
        max_retries=0,
        timeout=120,
        http_client=httpx.AsyncClient(event_hooks={"request": [recorder]}),
    )
    model_class = OpenAIChatCompletionsModel if api == "chat_completions" else OpenAIResponsesModel
    model = model_class(model=TINY_MODEL, openai_client=client)

    @function_tool
    def get_weather(unit: Literal["c", "f"], rain: bool) -> str:
        """The weather in Paris now, in the given unit."""
        calls.append({"unit": unit, "rain": rain})
        return f"20 {unit}, {'rain' if rain else 'dry'}"

    return Agent(
        name="weather",
        instructions="Answer with the weather tool.",
        model=model,
        tools=[get_weather],
        # reset_tool_choice (the default): "required" for the first request only.
        model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=200),
        **kwargs,
    )


def _answer(call: dict) -> str:
    return f"20 {call['unit']}, {'rain' if call['rain'] else 'dry'}"


@pytest.mark.parametrize("api", APIS)
async def test_forced_tool_stops_on_first_tool(openai_stack, api):
    recorder, calls = Recorder(), []
    agent = _agent(openai_stack, api, recorder, calls, tool_use_behavior="stop_on_first_tool")
    result = await Runner.run(agent, QUESTION, max_turns=2)
    assert len(calls) == 1, calls
    assert calls[0]["unit"] in ("c", "f") and isinstance(calls[0]["rain"], bool)
    # The tool's return value is the run's answer; one model request.
    assert result.final_output == _answer(calls[0])
    assert len(result.raw_responses) == 1 and len(recorder.bodies) == 1
    assert recorder.bodies[0]["tool_choice"] == "required"
    kinds = [type(item) for item in result.new_items]
    assert kinds == [ToolCallItem, ToolCallOutputItem]
    assert result.context_wrapper.usage.input_tokens > 0
    assert result.context_wrapper.usage.output_tokens > 0


class Verdict(BaseModel):
    """The agent's output type: tiny, so that the random model ends it well within
    max_tokens (free text would run to max_tokens, which the Responses API reports as
    `incomplete` and the SDK raises on)."""

    rain: bool
    unit: Literal["c", "f"]


@pytest.mark.parametrize("api", APIS)
async def test_forced_tool_then_answer(openai_stack, api):
    # The SDK's default loop: the tool's output goes back to the model, which answers
    # (tool_choice reset after the call) in the agent's output type (the server
    # constrains it to the schema the SDK sends).
    recorder, calls = Recorder(), []
    agent = _agent(openai_stack, api, recorder, calls, output_type=Verdict)
    result = await Runner.run(agent, QUESTION, max_turns=3)
    assert len(calls) == 1, calls
    output = _answer(calls[0])
    kinds = [type(item) for item in result.new_items]
    assert kinds == [ToolCallItem, ToolCallOutputItem, MessageOutputItem]
    call_item, output_item = result.new_items[0], result.new_items[1]
    assert output_item.output == output
    assert isinstance(result.final_output, Verdict)
    assert len(result.raw_responses) == 2 and len(recorder.bodies) == 2
    first, second = recorder.bodies
    assert first["tool_choice"] == "required"
    assert second.get("tool_choice") in (None, "auto")
    # The second request carried the call and its output.
    call_id = call_item.raw_item.call_id  # a Responses item on either API
    if api == "chat_completions":
        tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
        assert [(m["tool_call_id"], m["content"]) for m in tool_messages] == [(call_id, output)]
        assistant = [m for m in second["messages"] if m.get("tool_calls")]
        assert [c["id"] for c in assistant[0]["tool_calls"]] == [call_id]
    else:
        items = [i for i in second["input"] if isinstance(i, dict)]
        outputs = [i for i in items if i.get("type") == "function_call_output"]
        assert [(i["call_id"], i["output"]) for i in outputs] == [(call_id, output)]
        assert [i["call_id"] for i in items if i.get("type") == "function_call"] == [call_id]


@pytest.mark.parametrize("api", APIS)
async def test_streamed_forced_tool(openai_stack, api):
    recorder, calls = Recorder(), []
    agent = _agent(openai_stack, api, recorder, calls, tool_use_behavior="stop_on_first_tool")
    result = Runner.run_streamed(agent, QUESTION, max_turns=2)
    names = [
        event.name
        async for event in result.stream_events()
        if event.type == "run_item_stream_event"
    ]
    assert names == ["tool_called", "tool_output"]
    assert len(calls) == 1, calls
    assert result.final_output == _answer(calls[0])
    assert recorder.bodies[0]["stream"] is True
    assert result.context_wrapper.usage.output_tokens > 0
