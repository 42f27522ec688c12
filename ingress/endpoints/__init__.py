"""One module per API endpoint. Each handler does the same four steps:

    parse (ingress/http.py) → convert (wire type → contract request)
    → forward (ingress/forward.py) → shape (contract result → wire response)

and raises OpenAIError for anything the client should hear about; ingress/app.py
turns that into the response and counts it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from ingress.blobs import Blobs
from ingress.config import IngressConfig
from ingress.forward import Forwarder, RequestContext
from ingress.store import Store


@dataclass(frozen=True, slots=True)
class Api:
    """What every endpoint handler needs: the ingress's config and its pipeline, and
    the state store of the endpoints that keep objects (stored responses)."""

    config: IngressConfig
    forwarder: Forwarder
    store: Store | None = None
    blobs: Blobs | None = None  # the bytes of the Files API's files
    # Tells the batch supervisor a batch was created (it also looks every poll_interval_s).
    wake_batches: Callable[[], None] | None = None

    def state(self) -> Store:
        if self.store is None:
            raise RuntimeError("this ingress was built without a state store")
        return self.store

    def files(self) -> Blobs:
        if self.blobs is None:
            raise RuntimeError("this ingress was built without a blob store")
        return self.blobs


Handler = Callable[[Api, Request, RequestContext], Awaitable[Response]]
