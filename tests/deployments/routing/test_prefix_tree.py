"""The bounded prefix tree: insert, longest match, LRU eviction under both bounds,
forgetting a replica."""

from __future__ import annotations

import random

import pytest

from deployments.routing.prefix_tree import PrefixTree


def _tree(max_chars: int = 1_000_000, max_nodes: int = 100_000) -> PrefixTree[str]:
    return PrefixTree(max_chars, max_nodes)


def test_an_empty_tree_matches_nothing():
    assert _tree().match("hello") == (frozenset(), 0)


def test_the_longest_shared_prefix_wins_and_names_its_replicas():
    tree = _tree()
    tree.insert("system: be brief. user: hi", "a")
    tree.insert("system: be brief. user: bye", "b")
    tree.insert("system: be verbose.", "c")
    assert tree.match("system: be brief. user: hi there") == (frozenset({"a"}), 26)
    assert tree.match("system: be brief. user: b") == (frozenset({"b"}), 25)
    # Shared by a and b only: c diverges at "brief" vs "verbose".
    assert tree.match("system: be brief. assistant") == (frozenset({"a", "b"}), 18)
    assert tree.match("system: be x") == (frozenset({"a", "b", "c"}), 11)
    assert tree.match("other") == (frozenset(), 0)


def test_a_text_inside_an_edge_splits_it_and_both_halves_keep_their_replicas():
    tree = _tree()
    tree.insert("abcdef", "a")
    tree.insert("abc", "b")
    assert tree.nodes == 2 and tree.chars == 6
    assert tree.match("abcdef") == (frozenset({"a"}), 6)
    assert tree.match("abcxyz") == (frozenset({"a", "b"}), 3)
    assert tree.match("ab") == (frozenset({"a", "b"}), 2)


def test_match_among_only_counts_the_given_replicas():
    tree = _tree()
    tree.insert("shared prefix, then a's tail", "a")
    tree.insert("shared prefix, then b", "b")
    text = "shared prefix, then a's tail and more"
    assert tree.match(text) == (frozenset({"a"}), 28)
    assert tree.match(text, among={"b"}) == (frozenset({"b"}), 20)
    assert tree.match(text, among={"c"}) == (frozenset(), 0)


def test_the_char_bound_evicts_the_least_recently_used_tail_first():
    tree = _tree(max_chars=30)
    tree.insert("0123456789" + "old-tail", "a")  # 18 chars
    tree.insert("0123456789" + "new", "b")  # splits: +3 chars
    assert tree.chars == 21
    tree.insert("0123456789" + "old-tail", "a")  # touched again: now the newest
    tree.insert("zzzzzzzzzz", "c")  # 31 > 30: the oldest leaf ("new") goes
    assert tree.chars <= 30
    assert tree.match("0123456789new") == (frozenset({"a", "b"}), 10)
    assert tree.match("0123456789old-tail") == (frozenset({"a"}), 18)
    assert tree.match("zzzzzzzzzz") == (frozenset({"c"}), 10)
    assert tree.evicted_nodes == 1


def test_a_shared_prefix_outlives_the_tails_under_it():
    tree = _tree(max_nodes=3)
    tree.insert("prefix-one", "a")
    tree.insert("prefix-two", "a")  # prefix- / one / two
    tree.insert("prefix-three", "a")  # t splits: prefix- / one / t / wo / hree = 5
    assert tree.nodes <= 3
    # The oldest tails went; the prefix everything shares stays.
    assert tree.match("prefix-four")[1] == len("prefix-")
    assert tree.match("prefix-three") == (frozenset({"a"}), len("prefix-three"))


def test_a_text_longer_than_the_bound_is_kept_up_to_it():
    tree = _tree(max_chars=5)
    tree.insert("abcdefgh", "a")
    assert tree.chars == 5
    assert tree.match("abcdefgh") == (frozenset({"a"}), 5)


@pytest.mark.parametrize("max_chars, max_nodes", [(2_000, 10_000), (100_000, 50)])
def test_random_inserts_never_exceed_either_bound(max_chars, max_nodes):
    rng = random.Random(7)
    tree = _tree(max_chars, max_nodes)
    stems = ["".join(rng.choice("abc") for _ in range(40)) for _ in range(8)]
    for i in range(2_000):
        text = rng.choice(stems) + "".join(rng.choice("abcd") for _ in range(rng.randint(0, 60)))
        tree.insert(text, f"r{i % 3}")
        assert tree.chars <= max_chars and tree.nodes <= max_nodes
    # The most recent insert is always there in full (within the char bound).
    tree.insert(stems[0] + "tail", "r9")
    assert tree.match(stems[0] + "tail")[1] == len(stems[0]) + 4


def test_remove_replica_forgets_it_and_drops_what_only_it_held():
    tree = _tree()
    tree.insert("common start, a only", "a")
    tree.insert("common start, b only", "b")
    chars = tree.chars
    assert tree.remove_replica("a") == 1  # the "a only" leaf
    assert tree.chars == chars - len("a only")
    assert tree.match("common start, a only") == (frozenset({"b"}), len("common start, "))
    assert tree.replicas() == {"b"}
    assert tree.remove_replica("b") == 2
    assert tree.nodes == 0 and tree.chars == 0
    assert tree.remove_replica("b") == 0


def test_bounds_must_be_positive():
    with pytest.raises(ValueError):
        PrefixTree(0, 10)
