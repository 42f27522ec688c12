"""Request routing among an LLM application's replicas (issue #30): `config.py` (the
`routing:` section), `prefix_tree.py` (the bounded prefix tree), `policy.py` (the
decision, free of Ray), `prefix_router.py` (Serve's RequestRouter around it)."""
