"""Parsing a whole spec: child builds, `(from BASE)`, then the ops (parse_ops.py).

A spec is one list, as obuilder reads it (`((build NAME SPEC)... (from BASE) OP...)`); the
same forms written without the outer list are accepted too. Each child build is a spec of
its own, parsed with the names declared before it in scope.
"""

from __future__ import annotations

from corral.builds.sexp import START, Pos, Sexp, SList, SpecError, read
from corral.builds.spec import forms
from corral.builds.spec.ops import Build, Spec
from corral.builds.spec.parse_ops import Scope, parse_op

MAX_BUILD_DEPTH = 16  # nested (build ...) levels; far beyond any real spec, well inside the stack
_SPEC_FORM = "((from BASE) OP...)"


def _parse_build(form: SList, scope: Scope, taken: Scope, depth: int) -> Build:
    """A child build; `taken` holds the names in `scope` and those of the enclosing builds."""
    if len(form.items) != 3:
        forms.fail(form, f"build takes a name and a spec: (build NAME {_SPEC_FORM})")
    name = forms.string(form.items[1], "build name")
    if name in taken:
        forms.fail(form.items[1], f"duplicate build {name!r} (first declared at {taken[name]})")
    body = form.items[2]
    if not isinstance(body, SList):
        forms.fail(body, f"build {name!r} needs a spec {_SPEC_FORM}, got {forms.describe(body)}")
    if depth >= MAX_BUILD_DEPTH:
        forms.fail(form, f"builds are nested more than {MAX_BUILD_DEPTH} deep")
    inside = {**taken, name: form.items[1].pos or START}
    spec = _parse_items(body.items, body.pos or START, scope, inside, depth + 1)
    return Build(name, spec, pos=form.pos)


def _parse_items(
    items: tuple[Sexp, ...], where: Pos, scope: Scope, taken: Scope, depth: int
) -> Spec:
    visible, taken = dict(scope), dict(taken)
    builds: list[Build] = []
    i = 0
    while i < len(items) and forms.head(items[i]) == "build":
        item = items[i]
        assert isinstance(item, SList)
        build = _parse_build(item, visible, taken, depth)
        visible[build.name] = taken[build.name] = item.items[1].pos or START
        builds.append(build)
        i += 1
    if i == len(items):
        raise SpecError(where, "missing (from BASE)", hint=f"a spec looks like {_SPEC_FORM}")
    if forms.head(items[i]) != "from":
        item, head = items[i], forms.head(items[i])
        near = forms.suggest(head, ("from", "build")) if head else ""
        if any(forms.head(later) == "from" for later in items[i + 1 :]):
            forms.fail(
                item,
                f"{forms.describe(item)} comes before (from ...){near}",
                hint="only (build ...) items may come before (from BASE)",
            )
        forms.fail(item, f"missing (from BASE): expected it here, got {forms.describe(item)}{near}")
    from_form = items[i]
    assert isinstance(from_form, SList)
    (base,) = forms.args(from_form, "from", 1)
    ops = tuple(parse_op(item, visible) for item in items[i + 1 :])
    return Spec(forms.string(base, "from"), ops, tuple(builds), pos=where, base_pos=base.pos)


def _top_level(nodes: tuple[Sexp, ...]) -> tuple[tuple[Sexp, ...], Pos]:
    """The spec's items: obuilder's one outer list, or the same forms written without it."""
    if not nodes:
        raise SpecError(START, "empty spec", hint=f"a spec looks like {_SPEC_FORM}")
    first = nodes[0]
    wrapped = isinstance(first, SList) and (not first.items or isinstance(first.items[0], SList))
    if not wrapped:
        return nodes, first.pos or START
    if len(nodes) > 1:
        forms.fail(
            nodes[1], "text after the end of the spec", hint=f"a spec is one list {_SPEC_FORM}"
        )
    assert isinstance(first, SList)
    return first.items, first.pos or START


def parse_spec(text: str) -> Spec:
    """Parse a build spec; raise SpecError (`LINE:COL: reason`) on any mistake."""
    items, where = _top_level(read(text))
    return _parse_items(items, where, {}, {}, 0)
