"""SSE framing: usage on the finish chunk (DeepInfra) and the include_usage chunk (OpenAI)."""

import json

from deployments.contract import ChoiceDelta, GenerationChunk
from ingress.streaming import DONE_FRAME, ChunkFramer


def _events(text: str) -> list[dict]:
    assert text.endswith("\n\n")
    return [json.loads(f[len("data: "):]) for f in text.split("\n\n") if f]


def test_chat_frames_role_text_then_finish_with_usage():
    f = ChunkFramer("chat", "chatcmpl-1", 5, "m", include_usage=False)
    first = _events(f.frames(GenerationChunk([ChoiceDelta(0, "Hel", 1)], 7, 1)))
    assert first[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first[1]["choices"][0] == {"index": 0, "delta": {"content": "Hel"},
                                      "logprobs": None, "finish_reason": None}
    assert "usage" not in first[1]
    last = _events(f.frames(GenerationChunk([ChoiceDelta(0, "lo", 1, "stop")], 7, 2, True)))
    assert [e["choices"][0]["delta"] for e in last] == [{"content": "lo"}, {}]
    assert last[1]["choices"][0]["finish_reason"] == "stop"
    assert last[1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert all(e["object"] == "chat.completion.chunk" and e["id"] == "chatcmpl-1"
               for e in first + last)
    assert f.closing_frames() == DONE_FRAME


def test_include_usage_adds_choiceless_chunk_before_done():
    f = ChunkFramer("completion", "cmpl-1", 5, "m", include_usage=True)
    f.frames(GenerationChunk([ChoiceDelta(0, "x", 3, "length")], 4, 3, True))
    closing = f.closing_frames()
    assert closing.endswith(DONE_FRAME)
    usage_event = _events(closing[: -len(DONE_FRAME)])[0]
    assert usage_event["choices"] == [] and usage_event["object"] == "text_completion"
    assert usage_event["usage"]["total_tokens"] == 7


def test_n_choices_each_get_one_finish():
    f = ChunkFramer("completion", "cmpl-1", 5, "m", include_usage=False)
    out = _events(f.frames(GenerationChunk(
        [ChoiceDelta(0, "a", 1, "length"), ChoiceDelta(1, "b", 1, "length")], 2, 2, True)))
    finishes = [(e["choices"][0]["index"], e["choices"][0]["finish_reason"]) for e in out
                if e["choices"][0]["finish_reason"]]
    assert finishes == [(0, "length"), (1, "length")]
