"""Reading one form of a spec: the typed accessors every parser uses.

Each takes the S-expression node it reads and fails with a SpecError at that node's position,
so every message in the spec language starts with the line and column of its cause.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import NoReturn

from corral.builds.sexp import START, Atom, Sexp, SList, SpecError


def fail(node: Sexp, reason: str, hint: str | None = None) -> NoReturn:
    """Raise a SpecError at `node`'s position."""
    raise SpecError(node.pos or START, reason, hint=hint)


def suggest(name: str, candidates: Iterable[str]) -> str:
    """ "; did you mean 'X'?" for the closest candidate, or nothing."""
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def describe(node: Sexp) -> str:
    """A node as a message shows what was found instead: 'text', (head ...), (), a list."""
    if isinstance(node, Atom):
        return repr(node.value)
    if node.items and isinstance(node.items[0], Atom):
        return f"({node.items[0].value} ...)"
    return "()" if not node.items else "a list"


def head(node: Sexp) -> str | None:
    """The name a list starts with, as in (run ...); None for anything else."""
    if isinstance(node, SList) and node.items and isinstance(node.items[0], Atom):
        return node.items[0].value
    return None


def string(node: Sexp, what: str, *, empty_ok: bool = False) -> str:
    """An atom's text: no NUL, and not empty unless `empty_ok`."""
    if not isinstance(node, Atom):
        fail(node, f"{what} must be a string, got {describe(node)}")
    if "\0" in node.value:
        fail(node, f"{what} contains a NUL character")
    if not node.value and not empty_ok:
        fail(node, f"{what} must not be empty")
    return node.value


def args(form: SList, what: str, count: int) -> tuple[Sexp, ...]:
    """The `count` items after the head of `form`, exactly."""
    items = form.items[1:]
    if len(items) != count:
        values = "one value" if count == 1 else f"{count} values"
        fail(form, f"{what} takes {values}, got {len(items)}")
    return items


def fields(form: SList, what: str, allowed: tuple[str, ...]) -> dict[str, SList]:
    """The `(NAME ...)` fields after the head of `form`, by name, each at most once."""
    found: dict[str, SList] = {}
    for item in form.items[1:]:
        name = head(item)
        if name is None:
            fail(
                item,
                f"expected a field ({' | '.join(allowed)} ...) in {what}, got {describe(item)}",
            )
        assert isinstance(item, SList)
        if name not in allowed:
            fail(
                item.items[0],
                f"unknown field {name!r} in {what}{suggest(name, allowed)}",
                hint=f"{what} takes the fields {', '.join(allowed)}",
            )
        if name in found:
            fail(item, f"duplicate field {name!r} in {what} (first at {found[name].pos or START})")
        found[name] = item
    return found


def required(form: SList, fields: dict[str, SList], what: str, *names: str) -> None:
    """Fail at `form` if one of `names` is not among its `fields`."""
    for name in names:
        if name not in fields:
            fail(form, f"missing field {name!r} in {what}")
