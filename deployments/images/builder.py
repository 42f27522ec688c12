"""Builds one image application from its serve_config.yaml entry."""

from __future__ import annotations

from typing import Any

from deployments.engines import ImageEngineClass
from deployments.images.server import ImageServer
from deployments.options import ModelAppBuilder

# Defaults for an image replica; every key can be overridden per application under
# `deployment:` in serve_config.yaml.
IMAGE_DEPLOYMENT_DEFAULTS: dict[str, Any] = {
    # A replica runs one pipeline call at a time; this many requests may wait in it
    # to be batched (with n up to 4: up to 32 images), and Serve queues the rest (or
    # scales out, with autoscaling) instead of piling them onto one replica.
    "max_ongoing_requests": 8,
}

_BUILDER = ModelAppBuilder[ImageEngineClass](ImageServer, IMAGE_DEPLOYMENT_DEFAULTS, "Image")
# Serve's entry (serve_config.yaml's `import_path`): a plain function of one argument.
build_app = _BUILDER.build_app
# The engine seam: (args, engine_cls=None: diffusers) -> the bound ImageServer.
build_app_with_engine = _BUILDER.build_app_with_engine
