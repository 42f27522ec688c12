"""POST /images/generations through the real app: the default image model, the request the replica gets, and the base64 answer."""

import base64

import pytest

from deployments.contract import ErrorInfo, ImageRequest
from tests.ingress.fakes import (
    API,
    app_details,
    error_of,
    image_app,
    llm_app,
    make_stack,
    standard_stack,
)

pytestmark = pytest.mark.anyio

URL = f"{API}/images/generations"


def _images(*apps: tuple[str, str, str, bool]):
    """A stack of image applications given as (deploy_id, model, version, default)."""
    details = {d: app_details(m, v, ("image",), default=default) for d, m, v, default in apps}
    return make_stack(
        {**details, "llm-1": app_details("org/llm")},
        {**{d: image_app() for d, *_ in apps}, "llm-1": llm_app()},
    )


async def test_named_model_answers_base64_images():
    stack = standard_stack()
    async with stack.client({"x-request-id": "img-req"}) as client:
        response = await client.post(
            URL,
            json={
                "model": "org/img",
                "prompt": "a cat",
                "n": 2,
                "size": "1024x1536",
                "seed": 7,
                "output_format": "webp",
                "output_compression": 80,
                "num_inference_steps": 4,
                "guidance_scale": 0.0,
            },
        )
    assert response.status_code == 200
    body = response.json()
    assert [base64.b64decode(d["b64_json"]) for d in body["data"]] == [b"image-0", b"image-1"]
    assert all(d["revised_prompt"] == "a cat" for d in body["data"])
    assert (body["size"], body["output_format"]) == ("1024x1536", "webp")
    assert isinstance(body["created"], int)
    payload: ImageRequest = stack.serve.apps["img-1"].calls[0].payload
    assert payload.request_id.startswith("img-req-")
    assert (payload.prompt, payload.n, payload.width, payload.height, payload.seed) == (
        "a cat",
        2,
        1024,
        1536,
        7,
    )
    assert (
        payload.output_format,
        payload.output_compression,
        payload.num_inference_steps,
        payload.guidance_scale,
    ) == ("webp", 80, 4, 0.0)


async def test_defaults_size_and_format():
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(URL, json={"model": "org/img", "prompt": "x", "size": "auto"})
    payload: ImageRequest = stack.serve.apps["img-1"].calls[0].payload
    assert (payload.width, payload.height, payload.n, payload.output_format) == (
        1024,
        1024,
        1,
        "png",
    )
    assert response.json()["size"] == "1024x1024"


async def test_a_size_outside_the_schema_is_served_but_not_echoed():
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(
            URL, json={"model": "org/img", "prompt": "x", "size": "512x256"}
        )
    payload: ImageRequest = stack.serve.apps["img-1"].calls[0].payload
    assert (payload.width, payload.height) == (512, 256)
    assert response.status_code == 200 and "size" not in response.json()


async def test_the_only_image_model_is_the_default():
    stack = _images(("img-1", "org/img", "1", False))
    async with stack.client() as client:
        response = await client.post(URL, json={"prompt": "a cat"})
    assert response.status_code == 200, response.text
    assert len(stack.serve.apps["img-1"].calls) == 1


async def test_versions_of_one_image_model_pick_the_highest():
    stack = _images(("img-1", "org/img", "1", False), ("img-2", "org/img", "2", False))
    async with stack.client() as client:
        response = await client.post(URL, json={"prompt": "a cat"})
    assert response.status_code == 200
    assert (len(stack.serve.apps["img-1"].calls), len(stack.serve.apps["img-2"].calls)) == (0, 1)


async def test_two_unmarked_image_models_need_a_name():
    stack = _images(("a-1", "org/a", "1", False), ("b-1", "org/b", "1", False))
    async with stack.client() as client:
        response = await client.post(URL, json={"prompt": "a cat"})
    error = error_of(response, 400)
    assert (error["code"], error["param"]) == ("model_required", "model")
    assert "org/a" in error["message"] and "org/b" in error["message"]


async def test_the_marked_image_model_is_the_default():
    stack = _images(("a-1", "org/a", "1", False), ("b-1", "org/b", "1", True))
    async with stack.client() as client:
        response = await client.post(URL, json={"prompt": "a cat"})
    assert response.status_code == 200
    assert len(stack.serve.apps["b-1"].calls) == 1 and stack.serve.apps["a-1"].calls == []


async def test_no_image_model_is_404():
    stack = make_stack({"llm-1": app_details("org/llm")}, {"llm-1": llm_app()})
    async with stack.client() as client:
        response = await client.post(URL, json={"prompt": "a cat"})
    error = error_of(response, 404)
    assert (error["code"], error["param"]) == ("model_not_found", "model")


async def test_default_image_model_in_a_failed_application_is_503():
    stack = make_stack(
        {"img-1": app_details("org/img", tasks=("image",), status="DEPLOY_FAILED", running=0)},
        {"img-1": image_app()},
    )
    async with stack.client() as client:
        response = await client.post(URL, json={"prompt": "a cat"})
    assert error_of(response, 503)["code"] == "model_unavailable"


@pytest.mark.parametrize(
    "fields, param, code",
    [
        ({"response_format": "url"}, "response_format", "unsupported_value"),
        ({"stream": True}, "stream", "unsupported_value"),
        ({"size": "big"}, "size", "invalid_value"),
        ({"n": 5}, "n", "invalid_value"),
        ({"prompt": "   "}, "prompt", "invalid_value"),
    ],
)
async def test_unsupported_requests_are_400(fields, param, code):
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(URL, json={"model": "org/img", "prompt": "x", **fields})
    error = error_of(response, 400)
    assert (error["param"], error["code"]) == (param, code)
    assert stack.serve.apps["img-1"].calls == []


async def test_replica_error_is_its_status():
    stack = standard_stack()
    stack.serve.apps["img-1"].unary["generate"] = lambda _: ErrorInfo(
        "width must be a multiple of 16", kind="invalid_request", param="size"
    )
    async with stack.client() as client:
        response = await client.post(
            URL, json={"model": "org/img", "prompt": "x", "size": "100x100"}
        )
    assert error_of(response, 400)["param"] == "size"


async def test_chat_model_cannot_draw():
    stack = standard_stack()
    async with stack.client() as client:
        response = await client.post(URL, json={"model": "org/llm", "prompt": "x"})
    assert error_of(response, 400)["code"] == "model_task_mismatch"
