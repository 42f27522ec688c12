"""Engine exceptions → ErrorInfo: the one error mapper on the deployments side.

A model deployment never raises across the handle for a request it cannot serve; it
returns (or yields) an ErrorInfo whose `kind` the ingress alone maps to an HTTP status
and body (ingress/errors.py). This module decides the kind:

* The caller's fault (an engine's own validation error, a prompt longer than the
  context, a chat template that rejects the messages, a ValueError while planning)
  keeps its message and names the field in `param`, as vLLM's VLLMValidationError
  does with its `parameter`.
* Anything else is ours: the traceback goes to the log with the request id, and the
  client reads "Internal server error (request id R)." and nothing more, so no path,
  address or engine detail leaks. TypeError and RuntimeError are always ours, even
  where a ValueError-like exception would be the caller's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from deployments.contract import ErrorInfo

logger = logging.getLogger("ray.serve")

# Whether an engine rejected the request itself (the engine knows its own exception
# classes; see the `is_client_error` method of the engine protocols in engines.py).
ClientErrorTest = Callable[[BaseException], bool]


class InvalidInput(ValueError):
    """Input this model cannot serve, found by our own checks (not the engine's).

    Args:
        message: what is wrong and what to send instead.
        parameter: the request field at fault, for the error's `param`.
        code: the error's `code` (e.g. "invalid_value" for a value past a bound).
    """

    def __init__(
        self, message: str, *, parameter: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.code = code


class InvalidAdapter(InvalidInput):
    """A LoRA adapter the engine cannot load (files missing or corrupt, a rank past
    the engine's maximum); the message names no path, the log has the detail."""


class PromptTooLong(InvalidInput):
    """The prompt (plus the asked-for output) does not fit the model's context."""


def _never(exc: BaseException) -> bool:
    return False


def internal_error(request_id: str, exc: BaseException | None = None) -> ErrorInfo:
    """The one "internal error" value: logs the traceback, tells the client the id only.

    Args:
        request_id: the request's id, which the client can quote to the operator.
        exc: the exception to log; None logs the one being handled.

    Returns:
        An ErrorInfo of kind "internal" whose message names the request id alone.
    """
    logger.error("request %s failed", request_id, exc_info=exc if exc is not None else True)
    return ErrorInfo(f"Internal server error (request id {request_id}).", kind="internal")


def client_error(exc: BaseException, *, param: str | None = None, prefix: str = "") -> ErrorInfo:
    """A client fault as an ErrorInfo that keeps the exception's message.

    Args:
        exc: the exception; its `parameter` attribute, when set, names the field.
        param: the field to name when the exception names none.
        prefix: put before the message (e.g. "Invalid request: ").

    Returns:
        Kind "context_length" with code "context_length_exceeded" for PromptTooLong,
        else kind "invalid_request" (with the `code` of an InvalidInput).
    """
    param = getattr(exc, "parameter", None) or param
    if isinstance(exc, PromptTooLong):
        return ErrorInfo(
            str(exc), kind="context_length", param=param, code="context_length_exceeded"
        )
    code = exc.code if isinstance(exc, InvalidInput) else None
    return ErrorInfo(prefix + str(exc), param=param, code=code)


def engine_error(
    exc: BaseException, request_id: str, *, is_client_error: ClientErrorTest = _never
) -> ErrorInfo:
    """An exception raised while the engine served the request.

    Args:
        exc: what the engine raised.
        request_id: the request's id, for the log and the internal message.
        is_client_error: the engine's test for its own client errors.

    Returns:
        A client error when the engine says so (or for PromptTooLong), else the
        internal error.
    """
    if _is_ours(exc) or not (isinstance(exc, PromptTooLong) or is_client_error(exc)):
        return internal_error(request_id, exc)
    return client_error(exc)


def planning_error(
    exc: BaseException,
    request_id: str,
    *,
    is_client_error: ClientErrorTest = _never,
    prompt_param: str | None = None,
) -> ErrorInfo:
    """An exception raised while the request became engine input (rendering the chat
    template, tokenizing, building sampling parameters and schemas).

    Args:
        exc: what planning raised.
        request_id: the request's id, for the log and the internal message.
        is_client_error: the engine's test for its own client errors.
        prompt_param: the field holding the prompt ("messages" or "prompt"), named
            for a prompt that is too long or that the chat template rejects.

    Returns:
        A client error for PromptTooLong, a template error, a ValueError or an
        engine client error; the internal error for anything else.
    """
    if _is_ours(exc):
        return internal_error(request_id, exc)
    if isinstance(exc, PromptTooLong):
        return client_error(exc, param=prompt_param)
    if _is_template_error(exc):
        return client_error(exc, param=prompt_param, prefix="Invalid request: ")
    if isinstance(exc, ValueError) or is_client_error(exc):
        return client_error(exc, prefix="Invalid request: ")
    return internal_error(request_id, exc)


def _is_ours(exc: BaseException) -> bool:
    # A TypeError or RuntimeError is a bug or a broken engine whatever else the
    # exception class derives from; sending its text could leak internals.
    return isinstance(exc, (TypeError, RuntimeError))


def _is_template_error(exc: BaseException) -> bool:
    try:
        from jinja2 import TemplateError
    except ImportError:  # pragma: no cover - jinja2 comes with transformers
        return False
    return isinstance(exc, TemplateError)
