"""The cost of a schema `pattern`: counted quantifiers are expanded, nested repetition
without a separator and constructs a grammar cannot hold are refused."""

from __future__ import annotations

import pytest

from ingress.regex_cost import PatternRefused, pattern_size


@pytest.mark.parametrize(
    "pattern, size",
    [
        ("^abc$", 3),
        ("[a-z]{1,1000}", 1000),
        ("(ab){2,5}", 10),
        ("a+", 2),
        ("a*", 1),
        ("a{3,}", 4),
        ("x|yz", 3),
        (r"^\d{3}-\d{4}$", 8),
        # Nesting with a separator the inner part cannot match is not ambiguous.
        ("^[a-z]+(-[a-z]+)*$", 5),
        (r"^\d+(\.\d+)*$", 5),
        (r"^(\w+\s)*\w+$", 5),
        ("^([a-z0-9-]+\\.)+[a-z]{2,}$", 9),
        ("(a+b)+", 6),
    ],
)
def test_sizes(pattern, size):
    assert pattern_size(pattern, max_repeat=1000) == size


@pytest.mark.parametrize(
    "pattern, why",
    [
        ("(a+)+", "itself repeats"),
        ("(a*)*", "itself repeats"),
        ("(b|c+)*", "itself repeats"),
        ("(a{1,5})+", "itself repeats"),
        ("(a+a)+", "itself repeats"),
        ("(a+){3}", "itself repeats"),
        ("(a|a)*", "identical alternatives"),
        ("(ab|ab)", "identical alternatives"),
        ("[a-z]{1,1001}", "{1,1001}"),
        ("a{1001,}", "{1001,}"),
        (r"(a)\1", "backreference"),
        ("a(?=b)", "lookahead"),
        ("(?<!x)a", "lookbehind"),
        ("(" * 40 + "a" + ")" * 40, "nests more than 32 groups"),
    ],
)
def test_refused(pattern, why):
    with pytest.raises(PatternRefused, match=None) as caught:
        pattern_size(pattern, max_repeat=1000)
    assert why in str(caught.value)


def test_a_pattern_python_cannot_parse_has_no_size():
    # jsonschema refuses it as an invalid schema, with its own reason.
    assert pattern_size("(a", max_repeat=10) is None


def test_bounded_nesting_is_counted_not_refused():
    assert pattern_size("([a-z]{1,10}){1,10}", max_repeat=1000) == 100
