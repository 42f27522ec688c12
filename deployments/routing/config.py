"""How an LLM application routes its requests among its replicas: the `routing:` section
of its serve_config.yaml entry (deployments/llm/config.py).

Standard library and pydantic only: the config models are imported where neither Ray
nor an engine may be (tests/test_configuration_doc.py, the builders before `serve`).
A bad value fails `serve deploy` with a pydantic ValidationError naming the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RoutingPolicy = Literal["power_of_two", "prefix_aware"]

# The import path Serve's RequestRouterConfig takes for our router class. A string, so
# that this module needs no Ray; Serve imports it when the application is built.
PREFIX_ROUTER_CLASS = "deployments.routing.prefix_router.PrefixAwareRequestRouter"


class RoutingConfig(BaseModel):
    """Which request router Serve uses for the application's handles, and its knobs.

    `power_of_two` is Serve's own default router (two random replicas, the shorter
    queue wins) and sets no option at all. `prefix_aware` routes a request to the
    replica that served the longest prefix of its text (deployments/routing/
    prefix_router.py), unless that replica's load is too far above the least loaded
    one's; every other field applies to it only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: RoutingPolicy = Field(
        default="power_of_two",
        description="'power_of_two': Serve's default router, blind to prefixes. "
        "'prefix_aware': a request goes to the replica that served the longest prefix "
        "of its text (its vLLM prefix cache likely holds it), with power of two choices "
        "whenever the loads diverge past imbalance_threshold.",
    )
    imbalance_threshold: int = Field(
        default=8,
        gt=0,
        description="Requests: affinity yields to power of two choices when the "
        "matching replica has more than this many requests in flight above the least "
        "loaded candidate (and imbalance_ratio times as many).",
    )
    imbalance_ratio: float = Field(
        default=1.5,
        ge=1.0,
        description="Affinity also needs the matching replica's requests in flight to "
        "exceed this multiple of the least loaded candidate's before it yields: at high "
        "load a fixed difference is no imbalance (vLLM batches them all).",
    )
    min_match_chars: int = Field(
        default=256,
        gt=0,
        description="A shared prefix shorter than this (characters of the routing key, "
        "about 4 per token) is not worth an affinity: the request goes by power of two "
        "choices.",
    )
    max_key_chars: int = Field(
        default=32_768,
        gt=0,
        description="Characters of a request's routing key that the router reads and "
        "remembers; past them requests are told apart no further. Bounds the decision "
        "cost of a huge prompt.",
    )
    max_tree_chars: int = Field(
        default=8_000_000,
        gt=0,
        description="Bound on the characters the router's prefix tree holds, per "
        "application and ingress replica (about a byte each for ASCII text, up to 4); "
        "past it the least recently used prefixes are forgotten first.",
    )
    max_tree_nodes: int = Field(
        default=100_000,
        gt=0,
        description="Bound on the prefix tree's nodes (a few hundred bytes each; each "
        "distinct prompt adds at most two); past it the least recently used prefixes "
        "are forgotten first.",
    )

    def router_kwargs(self) -> dict[str, Any]:
        """The fields the router's `initialize_state` takes (JSON, as Serve requires)."""
        return self.model_dump(mode="json", exclude={"policy"})

    def serve_options(self) -> dict[str, Any]:
        """The Serve deployment options this policy sets: none for `power_of_two`
        (Serve's default stays exactly as it is), `request_router_config` for
        `prefix_aware`."""
        if self.policy == "power_of_two":
            return {}
        return {
            "request_router_config": {
                "request_router_class": PREFIX_ROUTER_CLASS,
                "request_router_kwargs": self.router_kwargs(),
            }
        }
