"""A bounded prefix tree: which replicas served which text prefixes.

A radix tree (compressed trie) over characters: each node holds the edge label from
its parent and the set of replicas that were sent a text running through it. A
replica in a node is in every ancestor too (an insert marks the whole path), so the
replicas sharing the longest prefix of a text are those of the deepest node reached.

Memory is bounded by characters held (the edge labels) and by nodes; past either
bound the least recently used prefixes go first. Every non-root node sits in one LRU
order, and an insert moves its whole path to the recent end deepest node first, so
a node always comes after all of its descendants: the oldest entry is always a leaf,
and evicting it forgets the tail of the least recently sent text while the prefix it
shares with newer texts stays (as vLLM's own prefix cache evicts its blocks).

Not Ray's tree (ray.llm._internal.serve.routing_policies.prefix_aware.prefix_tree):
that one is private API, lives in a detached actor that Ray's router queries with a
blocking `ray.get` per request, and bounds memory per replica only from a background
eviction thread. This one is a plain object in the router's process, bounded on
every insert. Its operations take a lock: the routers of one process share a tree
(deployments/routing/policy.py `shared_tree`), and Serve may run routers on its own
event-loop thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection, Hashable
from typing import Generic, TypeVar

R = TypeVar("R", bound=Hashable)


class _Node(Generic[R]):
    __slots__ = ("children", "edge", "parent", "replicas")

    def __init__(self, edge: str, parent: _Node[R] | None) -> None:
        self.edge = edge
        self.parent = parent
        self.children: dict[str, _Node[R]] = {}
        self.replicas: set[R] = set()


def _common_length(edge: str, text: str, pos: int) -> int:
    """Length of the common prefix of `edge` and `text[pos:]`, by binary search on C
    comparisons (a Python loop per character would cost far more on long edges)."""
    lo, hi = 0, min(len(edge), len(text) - pos)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text.startswith(edge[:mid], pos):
            lo = mid
        else:
            hi = mid - 1
    return lo


class PrefixTree(Generic[R]):
    """Text prefixes → the replicas that were sent them, bounded, LRU."""

    def __init__(self, max_chars: int, max_nodes: int) -> None:
        """Args:
        max_chars: bound on the characters of all edge labels together (>0).
        max_nodes: bound on the nodes, root excluded (>0).
        """
        if max_chars <= 0 or max_nodes <= 0:
            raise ValueError("max_chars and max_nodes must be > 0")
        self.max_chars = max_chars
        self.max_nodes = max_nodes
        self._root: _Node[R] = _Node("", None)
        # Every node but the root, oldest first; a node always after its descendants.
        self._lru: OrderedDict[_Node[R], None] = OrderedDict()
        self._chars = 0
        self.evicted_nodes = 0
        self._lock = threading.Lock()

    @property
    def chars(self) -> int:
        """Characters held (the sum of the edge labels)."""
        return self._chars

    @property
    def nodes(self) -> int:
        """Nodes held, root excluded."""
        return len(self._lru)

    def insert(self, text: str, replica: R) -> None:
        """Records that `replica` was sent `text` (its first max_chars characters).

        Every node on the path gets the replica and becomes the most recently used;
        then the least recently used leaves go until both bounds hold.
        """
        text = text[: self.max_chars]
        if not text:
            return
        with self._lock:
            path: list[_Node[R]] = []
            node = self._root
            pos, n = 0, len(text)
            while pos < n:
                child = node.children.get(text[pos])
                if child is None:
                    leaf: _Node[R] = _Node(text[pos:], node)
                    node.children[text[pos]] = leaf
                    self._lru[leaf] = None
                    self._chars += n - pos
                    leaf.replicas.add(replica)
                    path.append(leaf)
                    break
                edge = child.edge
                k = len(edge) if text.startswith(edge, pos) else _common_length(edge, text, pos)
                if k < len(edge):
                    # Split: `mid` takes the shared part and keeps child's replicas
                    # (and its place in the LRU order, before it is touched below).
                    mid: _Node[R] = _Node(edge[:k], node)
                    mid.replicas = set(child.replicas)
                    node.children[edge[0]] = mid
                    child.edge = edge[k:]
                    child.parent = mid
                    mid.children[child.edge[0]] = child
                    self._lru[mid] = None
                    child = mid
                child.replicas.add(replica)
                path.append(child)
                node = child
                pos += k
            for touched in reversed(path):  # deepest first: ancestors end up later
                self._lru.move_to_end(touched)
            self._evict()

    def match(self, text: str, among: Collection[R] | None = None) -> tuple[frozenset[R], int]:
        """The replicas sent the longest prefix of `text`, and its length.

        Args:
            text: the routing key.
            among: only these replicas count (e.g. the live ones, or those holding an
                adapter); None: every replica in the tree.

        Returns:
            (replicas, matched characters); (empty, 0) when no replica shares even the
            first character. Read-only: a match is no use, so it refreshes nothing
            (the insert after the request is routed does).
        """
        best: frozenset[R] = frozenset()
        matched = 0
        with self._lock:
            node = self._root
            pos, n = 0, len(text)
            while pos < n:
                child = node.children.get(text[pos])
                if child is None:
                    break
                live = (
                    child.replicas if among is None else {r for r in child.replicas if r in among}
                )
                if not live:
                    break
                edge = child.edge
                k = len(edge) if text.startswith(edge, pos) else _common_length(edge, text, pos)
                best, matched = frozenset(live), pos + k
                if k < len(edge):
                    break
                node = child
                pos += k
        return best, matched

    def remove_replica(self, replica: R) -> int:
        """Forgets `replica` everywhere; nodes no replica holds any more go.

        A walk of the whole tree: for a replica that died or was scaled down, not per
        request.

        Returns:
            How many nodes went.
        """
        with self._lock:
            before = len(self._lru)
            stack = list(self._root.children.values())
            while stack:
                node = stack.pop()
                if replica not in node.replicas:
                    continue  # nor in any descendant
                node.replicas.discard(replica)
                if node.replicas:
                    stack.extend(node.children.values())
                else:  # nor any descendant: the whole subtree goes
                    self._drop_subtree(node)
            return before - len(self._lru)

    def replicas(self) -> set[R]:
        """Every replica the tree holds a prefix for."""
        with self._lock:
            found: set[R] = set()
            for child in self._root.children.values():
                found |= child.replicas
            return found

    def _drop_subtree(self, top: _Node[R]) -> None:
        assert top.parent is not None
        del top.parent.children[top.edge[0]]
        stack = [top]
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            self._chars -= len(node.edge)
            del self._lru[node]

    def _evict(self) -> None:
        while self._lru and (self._chars > self.max_chars or len(self._lru) > self.max_nodes):
            leaf, _ = self._lru.popitem(last=False)
            assert not leaf.children and leaf.parent is not None
            del leaf.parent.children[leaf.edge[0]]
            self._chars -= len(leaf.edge)
            self.evicted_nodes += 1
