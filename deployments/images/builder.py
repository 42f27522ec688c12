"""Builds one image application from its serve_config.yaml entry."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from deployments.engines import ImageEngineClass
from deployments.images.config import ImageAppConfig
from deployments.images.server import ImageServer
from deployments.options import bind_model_app

# Defaults for an image replica; every key can be overridden per application under
# `deployment:` in serve_config.yaml.
IMAGE_DEPLOYMENT_DEFAULTS: dict[str, Any] = {
    # A replica runs one pipeline call at a time; this many requests may wait in it
    # to be batched (with n up to 4: up to 32 images), and Serve queues the rest (or
    # scales out, with autoscaling) instead of piling them onto one replica.
    "max_ongoing_requests": 8,
}


def build_app(args: dict[str, Any]) -> Application:
    """Serve's entry (the `import_path` of serve_config.yaml): Serve calls a builder
    with exactly one argument and refuses any other signature, so the engine seam is
    `build_app_with_engine`."""
    return build_app_with_engine(args)


def build_app_with_engine(
    args: dict[str, Any], engine_cls: ImageEngineClass | None = None
) -> Application:
    """Builds the Serve application for one image model version.

    Args:
        args: one application's `args` from serve_config.yaml (ImageAppConfig).
        engine_cls: the engine class the replicas use; None: diffusers.

    Returns:
        The bound ImageServer deployment, its model card in `user_config`.

    Raises:
        pydantic.ValidationError: `args` does not describe a valid ImageAppConfig.
    """
    config = ImageAppConfig.model_validate(args)
    return bind_model_app(
        ImageServer, config, IMAGE_DEPLOYMENT_DEFAULTS, "Image", engine_cls=engine_cls
    )
