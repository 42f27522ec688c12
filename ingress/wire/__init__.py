"""OpenAI wire types: what clients send and what we answer, one module per endpoint.

Fields follow the order of the official OpenAI OpenAPI document
(tests/data/openai-openapi/openapi.yaml); extensions that vLLM-style servers
accept sit in a block marked as not part of the OpenAI spec. Unknown request fields
are accepted and logged. No engine code here: conversion to engine parameters is
ingress/convert.py, against the neutral contract.
"""
