"""OpenAI-compatible HTTP ingress. Never imports an engine (vllm, torch, diffusers)."""
