"""The concurrency limits (per model, per API key): a 429 at the limit, and slots whose release counts once."""

import pytest

from ingress.errors import OpenAIError
from ingress.limits import ConcurrencyLimiter


def test_acquire_up_to_the_limit_then_429():
    limiter = ConcurrencyLimiter()
    slots = [limiter.acquire("a", 2, "'m'") for _ in range(2)]
    assert limiter.inflight("a") == 2
    with pytest.raises(OpenAIError) as caught:
        limiter.acquire("a", 2, "'m'")
    err = caught.value
    assert (err.status, err.code) == (429, "rate_limited")
    assert err.headers() == {"Retry-After": "1"} and "'m'" in err.message
    assert limiter.inflight("a") == 2  # a refusal takes no slot
    slots[0].release()
    assert limiter.acquire("a", 2, "'m'") is not None


def test_release_is_idempotent():
    limiter = ConcurrencyLimiter()
    first, second = limiter.acquire("a", 5, "m"), limiter.acquire("a", 5, "m")
    for _ in range(3):
        first.release()
    assert limiter.inflight("a") == 1
    second.release()
    second.release()
    assert limiter.inflight("a") == 0


def test_models_are_counted_apart():
    limiter = ConcurrencyLimiter()
    limiter.acquire("a", 1, "m")
    limiter.acquire("b", 1, "n")
    assert (limiter.inflight("a"), limiter.inflight("b"), limiter.inflight("c")) == (1, 1, 0)
    with pytest.raises(OpenAIError):
        limiter.acquire("a", 1, "m")


def test_the_message_names_what_is_limited():
    limiter = ConcurrencyLimiter()
    limiter.acquire("k1", 1, "this API key")
    with pytest.raises(OpenAIError) as caught:
        limiter.acquire("k1", 1, "this API key")
    assert caught.value.message.startswith("Too many concurrent requests for this API key")
