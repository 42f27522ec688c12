"""Builds one image application from its serve_config.yaml entry."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

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
    """Builds the Serve application for one image model version.

    Args:
        args: One application's `args` from serve_config.yaml (ImageAppConfig).

    Returns:
        The bound ImageServer deployment, its model card in `user_config`.

    Raises:
        pydantic.ValidationError: `args` does not describe a valid ImageAppConfig.
    """
    config = ImageAppConfig.model_validate(args)
    return bind_model_app(ImageServer, config, IMAGE_DEPLOYMENT_DEFAULTS, "Image")
