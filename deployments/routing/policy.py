"""The prefix-aware routing decision, free of Ray: the routing key of a request, the
choice among replicas given their loads, and the counts of decisions by kind.

deployments/routing/prefix_router.py is the thin Serve adapter around it (Serve's
`RequestRouter`); this module is what the unit tests and bench/router_decision.py
drive directly.

The routing key is the text the engine will see, as far as the caller can know it
without the model:

- completions: the prompt itself. A prompt of token ids becomes one character per id
  (after a marker no text starts with), so that a shared prefix of ids is a shared
  prefix of the key. A request of several prompts is matched on its first and
  remembered under all of them (the replica computes them all).
- chat: each message's role and content, in order, between separators. The engine sees
  the chat template rendered over the messages; the template is a deterministic
  function of them, and for the templates in use the rendering of messages[:k] is a
  prefix of the rendering of messages, so two requests share a rendered prefix about
  as far as they share this key. Rendering the template here would need the model's
  tokenizer files and Jinja in the ingress, and cost milliseconds for a long
  conversation, on every request; this costs one string join. Tools and
  response_format are left out: an agent's conversation keeps them from turn to turn,
  and a key that misses them only costs a miss, never a wrong answer.

Only the first `max_key_chars` characters of the key are built and used.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable, Collection, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from deployments.contract import GenerateRequest
from deployments.routing.config import RoutingConfig
from deployments.routing.prefix_tree import PrefixTree

R = TypeVar("R", bound=Hashable)

# What decided a request's replica, one count each in `PrefixPolicy.decisions`:
# - affinity: the replica(s) that served the longest prefix (an adapter's request
#   too, among the replicas Serve's multiplexing offers for its adapter);
# - fallback: a prefix matched, but the load guard (or a full replica) sent the
#   request elsewhere by power of two choices;
# - adapter: a request for a LoRA adapter with no prefix worth following: Serve's
#   multiplexed-model choice, then power of two choices among those replicas;
# - no_match: no prefix of at least min_match_chars: power of two choices;
# - unkeyed: no text to key on (a call that is not a generation): power of two.
DecisionKind = Literal["affinity", "fallback", "adapter", "no_match", "unkeyed"]
DECISION_KINDS: tuple[DecisionKind, ...] = (
    "affinity",
    "fallback",
    "adapter",
    "no_match",
    "unkeyed",
)

_MESSAGE = "\x1e"  # record separator: before each message's role
_CONTENT = "\x1f"  # unit separator: between role and content
_TOKEN_IDS = "\x00ids\x00"  # before a prompt of token ids
_MAX_CHAR = 0x10FFFF


def routing_texts(args: Iterable[Any], max_chars: int) -> tuple[str, ...]:
    """The routing key(s) of a handle call: for a GenerateRequest among `args`, its
    texts (the first is the one matched); () for any other call.

    Args:
        args: the call's positional arguments (Serve's PendingRequest.args).
        max_chars: characters kept of each key.
    """
    for arg in args:
        if isinstance(arg, GenerateRequest):
            return request_texts(arg, max_chars)
    return ()


def request_texts(request: GenerateRequest, max_chars: int) -> tuple[str, ...]:
    """The routing key(s) of one generation (see the module docstring)."""
    if request.task == "chat" or request.messages is not None:
        return _chat_key(request.messages or [], max_chars)
    keys = []
    for prompt in request.prompts:
        key = _prompt_key(prompt, max_chars)
        if key:
            keys.append(key)
    return tuple(keys)


def _chat_key(messages: list[dict[str, Any]], max_chars: int) -> tuple[str, ...]:
    parts: list[str] = []
    size = 0
    for message in messages:
        content = message.get("content")
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):  # parts, should a caller pass them unjoined
            text = "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
        else:
            text = str(content)
        calls = message.get("tool_calls")
        if calls:
            text += json.dumps(calls, sort_keys=True, separators=(",", ":"))
        part = f"{_MESSAGE}{message.get('role', '')}{_CONTENT}{text}"
        parts.append(part)
        size += len(part)
        if size >= max_chars:
            break
    key = "".join(parts)[:max_chars]
    return (key,) if key else ()


def _prompt_key(prompt: str | list[int], max_chars: int) -> str:
    if isinstance(prompt, str):
        return prompt[:max_chars]
    ids = prompt[: max(0, max_chars - len(_TOKEN_IDS))]
    if any(not 0 <= i <= _MAX_CHAR for i in ids):
        return ""  # not a vocabulary this key can spell: no key
    return (_TOKEN_IDS + "".join(map(chr, ids)))[:max_chars]


@dataclass(frozen=True, slots=True)
class Decision(Generic[R]):
    """One routing decision: its kind and, for an affinity, the replicas to try first
    (the caller tries power of two choices after them, and alone when there are none)."""

    kind: DecisionKind
    targets: tuple[R, ...] = ()
    matched_chars: int = 0


class PrefixPolicy(Generic[R]):
    """Prefix affinity under a load guard, over a bounded prefix tree.

    `decide` before routing, `record` once a replica accepted the request, `forget` a
    replica that is gone. `decisions` counts by kind, for metrics.
    """

    def __init__(
        self,
        config: RoutingConfig,
        tree: PrefixTree[R] | None = None,
        on_decision: Callable[[str], None] | None = None,
    ) -> None:
        """`on_decision` is called with each counted decision's kind (metrics)."""
        self.config = config
        self.tree: PrefixTree[R] = tree or PrefixTree(config.max_tree_chars, config.max_tree_nodes)
        self.decisions: dict[str, int] = dict.fromkeys(DECISION_KINDS, 0)
        self._on_decision = on_decision

    def texts(self, args: Iterable[Any]) -> tuple[str, ...]:
        """The routing key(s) of a handle call's arguments (`routing_texts`)."""
        return routing_texts(args, self.config.max_key_chars)

    def decide(
        self,
        texts: tuple[str, ...],
        candidates: Collection[R],
        load: Callable[[R], int | None],
        *,
        adapter: bool = False,
    ) -> Decision[R]:
        """Which replicas a request should try first.

        Args:
            texts: its routing key(s) (`texts`); () for a call with none.
            candidates: the replicas it may go to (a set: membership is tested).
            load: a replica's requests in flight as the caller last saw them, None if
                unknown (unknown counts as 0: Serve probes the replica before sending).
            adapter: whether the request names a LoRA adapter (Serve's multiplexed
                model id), `candidates` being those Serve's multiplexing offers.

        Returns:
            affinity with the longest-matching replicas whose load is within the
            guard; otherwise a kind with no targets (power of two choices).
        """
        if not texts:
            return Decision("unkeyed")
        replicas, matched = self.tree.match(texts[0], candidates)
        if matched < self.config.min_match_chars or not replicas:
            return Decision("adapter" if adapter else "no_match", (), matched)
        least = min((load(r) or 0 for r in candidates), default=0)
        targets = tuple(r for r in replicas if not self._imbalanced(load(r) or 0, least))
        if not targets:
            return Decision("fallback", (), matched)
        return Decision("affinity", targets, matched)

    def _imbalanced(self, busy: int, least: int) -> bool:
        return (
            busy - least > self.config.imbalance_threshold
            and busy > self.config.imbalance_ratio * least
        )

    def record(self, decision: Decision[R] | None, texts: tuple[str, ...], replica: R) -> None:
        """A replica accepted the request: count the decision and remember its texts.

        An affinity whose request went to a replica other than its targets (they
        were full) counts as a fallback. `decision` None (not known any more) counts
        nothing.
        """
        if decision is not None:
            kind: DecisionKind = decision.kind
            if kind == "affinity" and replica not in decision.targets:
                kind = "fallback"
            self.decisions[kind] += 1
            if self._on_decision is not None:
                self._on_decision(kind)
        for text in texts:
            self.tree.insert(text, replica)

    def forget(self, replica: R) -> None:
        """The replica is gone: its prefixes will match elsewhere."""
        self.tree.remove_replica(replica)


# One tree per application deployment and config in a process. The ingress holds a
# handle per (application, streaming) pair (ingress/handles.py), each with its own
# Serve router; both send the same replicas the same prompts, so they share what
# they learn. Weak values: a tree lives while a router holds it.
_TREES: weakref.WeakValueDictionary[tuple[str, ...], PrefixTree[Any]] = (
    weakref.WeakValueDictionary()
)
_TREES_LOCK = threading.Lock()


def shared_tree(owner: tuple[str, ...], config: RoutingConfig) -> PrefixTree[Any]:
    """The prefix tree of `owner` (e.g. (application, deployment)) under `config`'s
    bounds, made on first use."""
    key = (*owner, str(config.max_tree_chars), str(config.max_tree_nodes))
    with _TREES_LOCK:
        tree = _TREES.get(key)
        if tree is None:
            tree = PrefixTree(config.max_tree_chars, config.max_tree_nodes)
            _TREES[key] = tree
        return tree
