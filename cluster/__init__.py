"""Running serve_config on a cluster: KubeRay manifest, ray up config, a local
multi-node Ray (see cluster/README.md)."""
