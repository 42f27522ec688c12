"""The image builder validates first, then binds ImageServer (inspected, not run)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from ray.serve import Application

from deployments.contract import MODEL_CARD_KEY
from deployments.images.builder import build_app, build_app_with_engine
from deployments.images.server import ImageServer
from tests.fakes import FakeImageEngine

ARGS = {"model": "org/image", "model_source": "/tmp"}


def test_build_app_binds_the_image_server():
    app = build_app(ARGS)
    assert isinstance(app, Application)
    deployment = app._bound_deployment
    assert deployment.func_or_class is ImageServer and deployment.name == "Image:org-image-1"
    assert deployment.max_ongoing_requests == 8 and deployment.init_kwargs == {}
    assert deployment.user_config[MODEL_CARD_KEY]["tasks"] == ["image"]


def test_build_app_passes_the_engine_class():
    app = build_app_with_engine(ARGS, engine_cls=FakeImageEngine)
    assert app._bound_deployment.init_kwargs == {"engine_cls": FakeImageEngine}


@pytest.mark.parametrize(
    "bad",
    [
        {"model": "org/image"},
        {**ARGS, "engine": {"served_model_name": "x"}},  # a vLLM field: not an image one
        {**ARGS, "size": {"min_side": 512, "max_side": 256}},
        {**ARGS, "engine": {"start_timeout_s": 0}},
    ],
)
def test_invalid_args_fail_before_binding(bad):
    with pytest.raises(ValidationError):
        build_app(bad)
