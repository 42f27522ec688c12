"""POST /v1/openai/chat/completions."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from deployments.contract import GenerationResult
from ingress import bounds, convert
from ingress.endpoints import Api
from ingress.endpoints.generate import check_caps, generate, usage
from ingress.forward import RequestContext
from ingress.http import engine_request_id, parse, read_json
from ingress.wire.chat import AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionRequest


async def chat_completions(api: Api, request: Request, ctx: RequestContext) -> Response:
    data = await read_json(request, api.config.max_body_bytes)
    return await chat_from_json(api, ctx, data, engine_request_id(request))


async def chat_from_json(
    api: Api, ctx: RequestContext, data: dict[str, Any], request_id: str
) -> Response:
    """The endpoint after the HTTP body: also what a batch line runs (ingress/batches/)."""
    req = parse(ChatCompletionRequest, data)
    check_caps(api.config, req)
    await bounds.check_chat(api.config.bounds, req, api.config.max_tokens_cap)
    entry = await api.forwarder.resolve(ctx, req.model)
    gen = convert.chat_request(req, request_id)
    # The response echoes the model string the client sent, as OpenAI does.
    return await generate(api, ctx, entry, gen, req, req.model, "chat", chat_completion)


def chat_completion(response_id: str, model: str, result: GenerationResult) -> ChatCompletion:
    """The whole (non-streamed) chat answer."""
    return ChatCompletion(
        id=response_id,
        model=model,
        usage=usage(result),
        choices=[
            ChatChoice(
                index=c.index,
                finish_reason=c.finish_reason,
                logprobs=convert.chat_logprobs(c.logprobs),
                message=AssistantMessage(
                    content=c.text if (c.text or not c.tool_calls) else None,
                    tool_calls=convert.tool_calls(c.tool_calls),
                ),
            )
            for c in result.choices
        ],
    )
