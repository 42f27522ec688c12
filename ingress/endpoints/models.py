"""GET /v1/openai/models and /v1/openai/models/{model}: the catalog as OpenAI model
objects, one per model string that routes (NAME, NAME:VERSION, deploy_id:ID), with
our catalog fields (task, version, status and why, replicas) riding along."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ingress.catalog import CatalogEntry
from ingress.endpoints import Api
from ingress.forward import RequestContext
from ingress.wire.common import ModelList, ModelObject


async def list_models(api: Api, request: Request, ctx: RequestContext) -> Response:
    catalog = api.forwarder.catalog
    data = [
        model_object(model_id, entry)
        for entry in catalog.entries()
        for model_id in catalog.routable_ids(entry)
    ]
    return Response(ModelList(data=data).model_dump_json(), media_type="application/json")


async def get_model(api: Api, request: Request, ctx: RequestContext) -> Response:
    model_id = request.path_params["model_id"]
    entry = await api.forwarder.lookup(model_id)
    return Response(model_object(model_id, entry).model_dump_json(), media_type="application/json")


def model_object(model_id: str, entry: CatalogEntry) -> ModelObject:
    return ModelObject(
        id=model_id,
        created=0,
        owned_by=entry.card.owned_by,
        task=entry.card.tasks[0],
        tasks=list(entry.card.tasks),
        version=entry.card.version,
        deploy_id=entry.deploy_id,
        base_version=entry.card.base_version,
        status=entry.status,
        status_message=entry.status_message,
        running_replicas=entry.running_replicas,
        target_replicas=entry.target_replicas,
        max_model_len=entry.card.max_model_len,
    )
