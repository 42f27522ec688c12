"""What a JSON-schema `pattern` costs a grammar compiler, read from its parse tree.

Guided decoding turns a pattern into a grammar or an automaton. A counted quantifier
is expanded (xgrammar, measured with the tiny fixture's tokenizer: `[a-z]{1,1000}`
0.2 s, `[a-z]{1,3000}` 1.9 s, `[a-z]{1,20000}` 43 s just to convert), and a repetition
nested in a repetition (`(a+)+`) is what makes backtracking matchers and some automaton
constructions exponential. `pattern_size` counts the first and refuses the second,
conservatively: nesting is allowed when each outer repetition holds a literal the
inner part cannot match (the `-` of `[a-z]+(-[a-z]+)*`), since then no text can be
split between repetitions in two ways.

The tree is Python's own (`re._parser`); jsonschema checks `pattern` with `re.compile`,
so a pattern Python cannot parse is refused as an invalid schema anyway.
"""

from __future__ import annotations

import functools
import importlib
import re
from typing import Any

try:
    _sre: Any = importlib.import_module("re._parser")
except ImportError:  # pragma: no cover - Python 3.10 names it sre_parse
    _sre = importlib.import_module("sre_parse")

# Group nesting past this is refused before the walk below could recurse too deep.
_MAX_NESTING = 32
_REPEATS = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}
_ATOMS = {"LITERAL", "NOT_LITERAL", "ANY", "IN", "CATEGORY"}
_CATEGORY_REGEX = {
    "CATEGORY_DIGIT": r"\d",
    "CATEGORY_NOT_DIGIT": r"\D",
    "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S",
    "CATEGORY_WORD": r"\w",
    "CATEGORY_NOT_WORD": r"\W",
}

Atom = tuple[str, Any]


class PatternRefused(ValueError):
    """A pattern too costly (or impossible) to compile; the message says why, as the
    end of a sentence starting "The pattern"."""


def pattern_size(pattern: str, max_repeat: int) -> int | None:
    """The size of a pattern with its counted quantifiers expanded.

    Args:
        pattern: a JSON-schema `pattern` (or patternProperties key).
        max_repeat: the largest count a quantifier may name.

    Returns:
        An atom counts 1 and a quantifier multiplies its body by its upper count (its
        lower count + 1 when it has none): `[a-z]{1,1000}` is 1000, `(ab){2,5}` is 10,
        `a+` is 2. None for a pattern Python does not parse.

    Raises:
        PatternRefused: a count past `max_repeat`, a repetition nested in a repetition
            without a separator (`(a+)+`, `(a*)*`, `(b|c+)*`), identical alternatives
            (`(a|a)*`), a backreference or a lookaround, or groups nested too deeply.
    """
    try:
        tree = _sre.parse(pattern)
    except RecursionError:
        raise PatternRefused("nests groups too deeply") from None
    except Exception:
        return None
    return _Walk(max_repeat).shape(tree, 0).size


class _Shape:
    """What the walk learns of a subpattern."""

    __slots__ = ("size", "unbounded", "varying")

    def __init__(self, size: int = 0) -> None:
        self.size = size
        self.varying: list[Atom] = []  # atoms under a repetition of varying count
        self.unbounded = False  # whether such a repetition has no upper count

    def add(self, part: _Shape) -> None:
        self.size += part.size
        self.varying += part.varying
        self.unbounded = self.unbounded or part.unbounded


class _Walk:
    def __init__(self, max_repeat: int) -> None:
        self.max_repeat = max_repeat

    def shape(self, items: Any, depth: int) -> _Shape:
        if depth > _MAX_NESTING:
            raise PatternRefused(f"nests more than {_MAX_NESTING} groups")
        shape = _Shape()
        for op, av in items:
            name = str(op)
            if name in _ATOMS:
                shape.size += 1
            elif name == "SUBPATTERN":
                shape.add(self.shape(av[-1], depth + 1))
            elif name == "ATOMIC_GROUP":
                shape.add(self.shape(av, depth + 1))
            elif name == "BRANCH":
                shape.add(self._branch(av[1], depth))
            elif name in _REPEATS:
                shape.add(self._repeat(av, depth))
            elif name in ("GROUPREF", "GROUPREF_EXISTS"):
                raise PatternRefused("uses a backreference, which guided decoding cannot compile")
            elif name in ("ASSERT", "ASSERT_NOT"):
                raise PatternRefused(
                    "uses lookahead or lookbehind, which guided decoding cannot compile"
                )
        return shape

    def _branch(self, alternatives: Any, depth: int) -> _Shape:
        shape = _Shape()
        seen: set[str] = set()
        for alternative in alternatives:
            # Python's parser factors out common prefixes: `(ab|ab)` arrives as two
            # empty alternatives after `ab`.
            key = str(list(alternative))
            if key in seen:
                raise PatternRefused(
                    "has identical alternatives (`(a|a)` style), which make matching "
                    "ambiguous; list each alternative once"
                )
            seen.add(key)
            shape.add(self.shape(alternative, depth + 1))
        return shape

    def _repeat(self, av: Any, depth: int) -> _Shape:
        low, high, body_items = av
        unbounded = high == _sre.MAXREPEAT
        if low > self.max_repeat or (not unbounded and high > self.max_repeat):
            count = f"{{{low},}}" if unbounded else f"{{{low},{high}}}"
            raise PatternRefused(
                f"repeats {count} times; quantifier counts of at most {self.max_repeat} "
                "are allowed. Use a smaller count, or maxLength without a pattern"
            )
        body = self.shape(body_items, depth + 1)
        nested = high > 1 and bool(body.varying) and (unbounded or body.unbounded)
        if nested and not _has_separator(body_items, body.varying):
            raise PatternRefused(
                "repeats a part that itself repeats (`(a+)+`, `(a*)*` style), which can "
                "take exponential time to compile or match. Rewrite it so that each "
                "repetition holds a character the inner part cannot match, as in "
                "`[a-z]+(-[a-z]+)*`"
            )
        shape = _Shape(body.size * (low + 1 if unbounded else high))
        shape.varying = list(body.varying)
        shape.unbounded = body.unbounded
        if high > 1 and low != high:
            shape.varying += _atoms(body_items)
            shape.unbounded = shape.unbounded or unbounded
        return shape


def _atoms(items: Any) -> list[Atom]:
    """Every atom of a subpattern, at any depth."""
    found: list[Atom] = []
    stack = [items]
    while stack:
        for op, av in stack.pop():
            name = str(op)
            if name in _ATOMS:
                found.append((name, av))
            elif name == "SUBPATTERN":
                stack.append(av[-1])
            elif name == "ATOMIC_GROUP":
                stack.append(av)
            elif name == "BRANCH":
                stack.extend(av[1])
            elif name in _REPEATS:
                stack.append(av[2])
    return found


def _has_separator(items: Any, varying: list[Atom]) -> bool:
    """Whether a repeated body always holds a character class (a literal, a small set,
    `\\s`) that none of its varying parts can match: then where each repetition starts
    and ends is fixed."""
    for op, av in _once(items):
        chars = _chars(str(op), av)
        if chars is not None and not any(_matches(a, c) for a in varying for c in chars):
            return True
    return False


def _chars(name: str, av: Any) -> set[int] | None:
    """The characters an atom matches, when they are few and known; else None."""
    if name == "LITERAL":
        return {av}
    if name != "IN":
        return None
    chars: set[int] = set()
    for op, value in av:
        kind = str(op)
        if kind == "LITERAL":
            chars.add(value)
        elif kind == "RANGE" and value[1] - value[0] < 256:
            chars.update(range(value[0], value[1] + 1))
        elif kind == "CATEGORY" and str(value) == "CATEGORY_SPACE":
            chars |= _spaces()
        else:
            return None  # a negation, a large range, another category
    return chars


@functools.cache
def _spaces() -> frozenset[int]:
    # Every character `\s` matches lies below U+3001 (the ideographic space is the last).
    return frozenset(c for c in range(0x3001) if re.fullmatch(r"\s", chr(c)))


def _once(items: Any) -> list[tuple[Any, Any]]:
    """The items a subpattern matches exactly once, looking through plain groups."""
    out: list[tuple[Any, Any]] = []
    for op, av in items:
        if str(op) == "SUBPATTERN":
            out += _once(av[-1])
        else:
            out.append((op, av))
    return out


def _matches(atom: Atom, char: int) -> bool:
    """Whether an atom may match the character (True when unsure)."""
    name, av = atom
    if name == "LITERAL":
        return bool(av == char)
    if name == "NOT_LITERAL":
        return bool(av != char)
    if name != "IN":
        return True
    negate = hit = False
    for op, value in av:
        kind = str(op)
        if kind == "NEGATE":
            negate = True
        elif kind == "LITERAL":
            hit = hit or value == char
        elif kind == "RANGE":
            hit = hit or value[0] <= char <= value[1]
        elif kind == "CATEGORY" and str(value) in _CATEGORY_REGEX:
            hit = hit or re.fullmatch(_CATEGORY_REGEX[str(value)], chr(char)) is not None
        else:
            return True
    return hit != negate
