"""deployments/routing/metrics.py outside a Ray worker: nothing is made or exported
(the router then counts its decisions in memory only). Inside Ray, the exported
counter is read by tests/e2e/test_routing.py."""

from __future__ import annotations

from deployments.routing.metrics import decision_recorder


def test_outside_ray_no_counter_is_made():
    assert decision_recorder("app") is None
