"""The ingress as a Serve deployment: a Starlette app built inside each replica."""

from __future__ import annotations

from typing import Any

from ray import serve
from starlette.applications import Starlette

from ingress.app import build_asgi_app
from ingress.blobs import Blobs
from ingress.catalog import Catalog
from ingress.config import IngressConfig
from ingress.endpoints import Api
from ingress.forward import Forwarder
from ingress.handles import HandleCache
from ingress.metrics import IngressMetrics
from ingress.store import Store


@serve.ingress()
class OpenAIIngress:
    """Serve builds the ASGI app per replica (after __init__) through
    `__serve_build_asgi_app__`, so routes bind to this replica's catalog and handle
    cache rather than to module globals."""

    def __init__(self, config: dict[str, Any], batch_supervisor: Any = None) -> None:
        # The supervisor finds its work in the state store; the handle (which also makes
        # it part of this application) only wakes it when a batch is created.
        self._batch_supervisor = batch_supervisor
        self._config = IngressConfig.model_validate(config)
        handles = HandleCache()
        catalog = Catalog(
            refresh_interval_s=self._config.catalog_refresh_s,
            miss_refresh_s=self._config.catalog_miss_refresh_s,
            on_refresh=handles.keep_only,
        )
        forwarder = Forwarder(
            catalog,
            handles,
            IngressMetrics(),
            key_limit=self._config.auth.max_concurrent_requests_per_key,
        )
        blobs = Blobs.from_config(self._config.files, self._config.state)
        self._api = Api(
            self._config, forwarder, Store(self._config.state), blobs, self._wake_batches
        )

    def _wake_batches(self) -> None:
        if self._batch_supervisor is not None:
            self._batch_supervisor.wake.remote()  # fire and forget: a lost one costs a poll

    def __serve_build_asgi_app__(self) -> Starlette:
        return build_asgi_app(self._api)
