"""The Python snippets of DeepInfra's "OpenAI API" documentation page (its Chat Completions
and Completions examples, quoted below as written: this module reads no file), run with
only the base URL changed, against our server. The tiny test model answers to the
snippets' model name as an alias."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

CHAT = """from openai import OpenAI

openai = OpenAI(
    api_key="$DEEPINFRA_TOKEN",
    base_url="https://api.deepinfra.com/v1/openai",
)

stream = True # or False

chat_completion = openai.chat.completions.create(
    model="meta-llama/Meta-Llama-3-8B-Instruct",
    messages=[{"role": "user", "content": "Hello"}],
    stream=stream,
)

if stream:
    for event in chat_completion:
        if event.choices[0].finish_reason:
            print(event.choices[0].finish_reason,
                  event.usage['prompt_tokens'],
                  event.usage['completion_tokens'])
        else:
            print(event.choices[0].delta.content)
else:
    print(chat_completion.choices[0].message.content)
    print(chat_completion.usage.prompt_tokens, chat_completion.usage.completion_tokens)
"""

COMPLETIONS = """from openai import OpenAI

openai = OpenAI(
    api_key="$DEEPINFRA_TOKEN",
    base_url="https://api.deepinfra.com/v1/openai",
)

stream = True # or False

completion = openai.completions.create(
    model='meta-llama/Meta-Llama-3-8B-Instruct',
    prompt='<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n',
    stop=['<|eot_id|>'],
    stream=stream,
)

if stream:
    for event in completion:
        if event.choices[0].finish_reason:
            print(event.choices[0].finish_reason,
                  event.usage.prompt_tokens,
                  event.usage.completion_tokens)
        else:
            print(event.choices[0].text)
else:
    print(completion.choices[0].text)
    print(completion.usage.prompt_tokens, completion.usage.completion_tokens)
"""


def _run(snippet: str, base_url: str, stream: bool) -> subprocess.CompletedProcess:
    code = snippet.replace("https://api.deepinfra.com/v1/openai", base_url)
    code = code.replace("stream = True # or False", f"stream = {stream}")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def _finish_line(stdout: str) -> list[str]:
    last = stdout.strip().splitlines()[-1].split()
    return last


@pytest.mark.parametrize("stream", [True, False])
def test_completions_snippet_runs_unchanged(openai_stack, stream):
    out = _run(COMPLETIONS, openai_stack, stream)
    assert out.returncode == 0, out.stderr
    words = _finish_line(out.stdout)
    if stream:  # "<finish_reason> <prompt_tokens> <completion_tokens>"
        assert words[0] in ("stop", "length") and int(words[1]) > 0 and int(words[2]) > 0
    else:  # "<prompt_tokens> <completion_tokens>"
        assert int(words[0]) > 0 and int(words[1]) > 0


def test_chat_snippet_runs_unchanged_non_stream(openai_stack):
    out = _run(CHAT, openai_stack, False)
    assert out.returncode == 0, out.stderr
    prompt_tokens, completion_tokens = map(int, _finish_line(out.stdout))
    assert prompt_tokens > 0 and completion_tokens > 0


def test_chat_snippet_stream(openai_stack):
    """As written, the snippet subscripts `event.usage`, which the openai SDK (>= 1.0)
    parses into a non-subscriptable CompletionUsage whatever the server sends; so it
    fails inside the SDK exactly there, after reaching the finish chunk with usage.
    With attribute access, the rest of the snippet runs unchanged."""
    out = _run(CHAT, openai_stack, True)
    assert "'CompletionUsage' object is not subscriptable" in out.stderr
    fixed = CHAT.replace("event.usage['prompt_tokens']", "event.usage.prompt_tokens")
    fixed = fixed.replace("event.usage['completion_tokens']", "event.usage.completion_tokens")
    out = _run(fixed, openai_stack, True)
    assert out.returncode == 0, out.stderr
    finish, prompt_tokens, completion_tokens = _finish_line(out.stdout)
    assert finish in ("stop", "length") and int(prompt_tokens) > 0 and int(completion_tokens) > 0
