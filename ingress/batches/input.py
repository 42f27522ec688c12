"""A batch's input file, checked line by line before any request runs.

The file must be JSONL whose every line is a request to the batch's endpoint:
`{"custom_id": str, "method": "POST", "url": <endpoint>, "body": {...}}`, each custom_id
once, every body naming a model. A file that breaks this
fails the batch in `validating`, with errors that give line numbers. What each body asks
for is checked later, when the line runs, by the online endpoint's own wire types and
bounds: a bad body is one line in the error file, not a failed batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

# The endpoints a batch may target → the task its model must serve.
ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/embeddings": "embeddings",
}
MAX_CUSTOM_ID = 512
MAX_ERRORS = 20  # reported per failed file; the rest are counted in the last message


@dataclass(slots=True)
class InputCheck:
    """What checking a file found: `requests` lines (JSON text, one per line, with
    the line number `i`) when it passed, else `errors` (OpenAI's BatchError objects)."""

    endpoint: str
    max_lines: int
    lines: int = 0
    model: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)
    _more: int = 0

    def _error(self, line: int | None, code: str, message: str, param: str | None = None) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"code": code, "message": message, "param": param, "line": line})
        else:
            self._more += 1

    def check(self, raw_lines: Iterable[bytes]) -> Iterator[str]:
        """Yields each valid line as a request row for the pipeline (JSON text:
        {"i", "custom_id", "body"}, the body kept as JSON text); errors accumulate."""
        for number, raw in enumerate(raw_lines, start=1):
            if not raw.strip():
                continue
            self.lines += 1
            if self.lines > self.max_lines:
                self._error(number, "too_many_lines", f"More than {self.max_lines} requests.")
                return
            row = self._line(number, raw)
            if row is not None:
                yield row
        if self.lines == 0:
            self._error(None, "empty_file", "The input file holds no requests.")
        if self._more:
            self.errors[-1]["message"] += f" ({self._more} more errors not shown)"

    def _line(self, number: int, raw: bytes) -> str | None:
        try:
            line = json.loads(raw)
        except (ValueError, RecursionError):
            self._error(number, "invalid_json_line", "This line is not valid JSON.")
            return None
        if not isinstance(line, dict):
            self._error(number, "invalid_request", "Each line must be a JSON object.")
            return None
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID:
            self._error(
                number,
                "invalid_custom_id",
                f"custom_id must be a string of 1 to {MAX_CUSTOM_ID} characters.",
                "custom_id",
            )
            return None
        if custom_id in self._seen:
            self._error(
                number, "duplicate_custom_id", "This custom_id appears before.", "custom_id"
            )
            return None
        self._seen.add(custom_id)
        if line.get("method") != "POST":
            self._error(number, "invalid_method", "method must be POST.", "method")
            return None
        if line.get("url") != self.endpoint:
            self._error(
                number,
                "mismatched_endpoint",
                f"url must be the batch's endpoint, {self.endpoint}.",
                "url",
            )
            return None
        body = line.get("body")
        if not isinstance(body, dict):
            self._error(number, "invalid_body", "body must be a JSON object.", "body")
            return None
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self._error(number, "missing_model", "body.model must name a model.", "body.model")
            return None
        if self.model is None:  # the batch's model (its capacity sets the batch's share)
            self.model = model
        return json.dumps({"i": number, "custom_id": custom_id, "body": json.dumps(body)})
