"""Image generation through real Serve + the tiny random FLUX pipeline + the openai SDK."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from PIL import Image

from tests.conftest import TINY_MODEL
from tests.e2e.conftest import IMAGE_MODEL

pytestmark = pytest.mark.e2e

PROMPT = "A photo of an astronaut riding a horse on Mars."
MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff"}


@pytest.fixture(scope="module")
def image_app(flux_app):
    """The session's tiny FLUX application (tests/e2e/conftest.py): its handle."""
    return flux_app


def _decode(item) -> bytes:
    return base64.b64decode(item.b64_json)


def test_size_is_honoured_and_png_is_the_default(client, image_app):
    r = client.images.generate(model=IMAGE_MODEL, prompt=PROMPT, size="320x192")
    assert isinstance(r.created, int) and len(r.data) == 1
    raw = _decode(r.data[0])
    assert raw.startswith(MAGIC["png"])
    assert Image.open(io.BytesIO(raw)).size == (320, 192)  # width x height
    assert r.data[0].revised_prompt == PROMPT


def test_n_images_are_distinct(client, image_app):
    r = client.images.generate(
        model=IMAGE_MODEL, prompt=PROMPT, size="64x64", n=3, extra_body={"seed": 1}
    )
    images = [_decode(d) for d in r.data]
    assert len(images) == 3 and len(set(images)) == 3
    assert all(Image.open(io.BytesIO(i)).size == (64, 64) for i in images)


def test_same_seed_same_bytes_other_seed_other_image(client, image_app):
    def make(seed: int) -> bytes:
        r = client.images.generate(
            model=IMAGE_MODEL, prompt=PROMPT, size="128x64", extra_body={"seed": seed}
        )
        return _decode(r.data[0])

    first = make(42)
    assert make(42) == first
    other = make(43)
    assert other != first
    pixels = [Image.open(io.BytesIO(b)).tobytes() for b in (first, other)]
    assert pixels[0] != pixels[1]


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_output_format(client, image_app, fmt):
    r = client.images.generate(model=IMAGE_MODEL, prompt=PROMPT, size="64x64", output_format=fmt)
    raw = _decode(r.data[0])
    if fmt == "webp":
        assert raw[:4] == b"RIFF" and raw[8:12] == b"WEBP"
    else:
        assert raw.startswith(MAGIC[fmt])
    assert Image.open(io.BytesIO(raw)).format == fmt.upper()


@pytest.mark.parametrize(
    "body, param, says",
    [
        ({"prompt": ""}, "prompt", "at least 1 character"),
        ({"prompt": "   "}, "prompt", "must contain text"),
        ({"n": 0}, "n", "greater than or equal to 1"),
        ({"n": 5}, "n", "less than or equal to 4"),
        ({"size": "1000x1000"}, "size", "multiple of 16"),
        ({"size": "2048x1024"}, "size", "limit of 1024"),
        ({"size": "16x16"}, "size", "minimum of 64"),
        ({"size": "big"}, "size", "WIDTHxHEIGHT"),
        ({"size": "1024*1024"}, "size", "WIDTHxHEIGHT"),
        ({"size": "1024x"}, "size", "WIDTHxHEIGHT"),
        ({"response_format": "url"}, "response_format", "b64_json"),
        ({"output_format": "gif"}, "output_format", "png"),
        ({"num_inference_steps": 500}, "num_inference_steps", "at most 50"),
    ],
)
def test_bad_input_is_a_400(openai_stack, image_app, body, param, says):
    payload = {"model": IMAGE_MODEL, "prompt": PROMPT, "size": "64x64", **body}
    r = httpx.post(f"{openai_stack}/images/generations", json=payload, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(r.json()) == {"error"}
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert isinstance(error["code"], str) and says in error["message"]


def test_sdk_raises_bad_request_and_wrong_task(client, image_app):
    with pytest.raises(openai.BadRequestError):
        client.images.generate(model=IMAGE_MODEL, prompt=PROMPT, response_format="url")
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(model=TINY_MODEL, prompt=PROMPT, size="64x64")
    assert info.value.body["code"] == "model_task_mismatch"


def test_concurrent_requests_share_a_pipeline_call(client, image_app):
    before = len(image_app.stats.remote().result()["recent_batch_sizes"])

    def one(seed: int):
        return client.images.generate(
            model=IMAGE_MODEL, prompt=PROMPT, size="256x256", extra_body={"seed": seed}
        )

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert all(len(r.data) == 1 for r in results)
    sizes = image_app.stats.remote().result()["recent_batch_sizes"][before:]
    assert sum(sizes) == 8  # every image came from exactly one pipeline call
    assert max(sizes) > 1, sizes


SNIPPET = """import io
import base64
from PIL import Image
from openai import OpenAI

client = OpenAI(
    api_key="$DEEPINFRA_TOKEN",
    base_url="https://api.deepinfra.com/v1/openai"
)

if __name__ == "__main__":
    response = client.images.generate(
        prompt="A photo of an astronaut riding a horse on Mars.",
        size="1024x1024",
        quality="standard",
        n=1,
    )
    b64_json = response.data[0].b64_json
    image_bytes = base64.b64decode(b64_json)
    image = Image.open(io.BytesIO(image_bytes))
    image.save("output.png")
"""


def test_reference_snippet_runs_unchanged(openai_stack, image_app, tmp_path):
    # No `model` in the snippet: the default image model answers, at 1024x1024.
    code = SNIPPET.replace("https://api.deepinfra.com/v1/openai", openai_stack)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "output.png").size == (1024, 1024)


@pytest.mark.parametrize("size", ["256x256", "1024x1024"])
def test_response_fits_the_openai_schema(openai_stack, image_app, size):
    """`size` is echoed only where OpenAI's ImagesResponse admits the value."""
    from tests.openapi import validate

    r = httpx.post(
        f"{openai_stack}/images/generations",
        json={"model": IMAGE_MODEL, "prompt": PROMPT, "size": size},
        timeout=120,
    )
    assert r.status_code == 200
    body = r.json()
    validate("ImagesResponse", body)
    assert body.get("size") == (size if size == "1024x1024" else None)
