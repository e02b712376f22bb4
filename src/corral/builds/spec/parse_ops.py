"""Parsing each op of a spec, `(comment ...)` to `(copy ...)`, into the syntax tree.

The ops and their fields are obuilder's (see its README), with record fields in any order.
A `copy` may name a child build only if it is in scope (declared before, here or around).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from corral.builds.sexp import START, Atom, Pos, Sexp, SList
from corral.builds.spec import forms
from corral.builds.spec.ops import (
    CACHE_NAME,
    Cache,
    Comment,
    Copy,
    Env,
    NamedUser,
    Op,
    Run,
    Secret,
    Shell,
    UnixUser,
    User,
    Workdir,
)

OP_NAMES = ("comment", "workdir", "shell", "env", "user", "run", "copy")
_UINT = re.compile(r"[0-9]+")
_MAX_ID = 2**32 - 1  # uid_t and gid_t are 32 bits; -1 is reserved

Scope = Mapping[str, Pos]  # build names visible to copy ops, with where each was declared


def _parse_comment(form: SList, scope: Scope) -> Comment:
    (text,) = forms.args(form, "comment", 1)
    return Comment(forms.string(text, "comment", empty_ok=True), pos=form.pos)


def _parse_workdir(form: SList, scope: Scope) -> Workdir:
    (path,) = forms.args(form, "workdir", 1)
    return Workdir(forms.string(path, "workdir"), pos=form.pos)


def _parse_shell(form: SList, scope: Scope) -> Shell:
    if len(form.items) < 2:
        forms.fail(form, "shell needs at least one argument, e.g. (shell /bin/sh -c)")
    args = tuple(forms.string(arg, "shell argument", empty_ok=True) for arg in form.items[1:])
    return Shell(args, pos=form.pos)


def _parse_env(form: SList, scope: Scope) -> Env:
    name, value = forms.args(form, "env", 2)
    text = forms.string(name, "env name")
    if "=" in text:
        forms.fail(name, f"env name {text!r} contains '='")
    return Env(text, forms.string(value, "env value", empty_ok=True), pos=form.pos)


def _id_number(field_form: SList, what: str) -> int:
    (value,) = forms.args(field_form, what, 1)
    text = forms.string(value, what)
    if not _UINT.fullmatch(text) or int(text) >= _MAX_ID:
        forms.fail(value, f"{what} must be an integer from 0 to {_MAX_ID - 1}, got {text!r}")
    return int(text)


def _parse_user(form: SList, scope: Scope) -> User:
    fields = forms.fields(form, "user", ("uid", "gid", "name"))
    if "name" in fields:
        if "uid" in fields or "gid" in fields:
            forms.fail(form, "user takes either (uid N) (gid N) or (name NAME), not both")
        (name,) = forms.args(fields["name"], "user name", 1)
        return NamedUser(forms.string(name, "user name"), pos=form.pos)
    if not fields:
        forms.fail(form, "user needs (uid N) (gid N) or (name NAME)")
    forms.required(form, fields, "user", "uid", "gid")
    uid = _id_number(fields["uid"], "uid")
    return UnixUser(uid, _id_number(fields["gid"], "gid"), pos=form.pos)


def _mounts(
    field_form: SList, what: str, names: re.Pattern[str] | None = None
) -> list[tuple[str, str, SList]]:
    """`(ID (target PATH))...` entries of a cache or secrets field, IDs unique (and matching
    `names` when given)."""
    mounts: list[tuple[str, str, SList]] = []
    seen: dict[str, Pos] = {}
    for entry in field_form.items[1:]:
        if not isinstance(entry, SList) or not entry.items:
            forms.fail(entry, f"expected (ID (target PATH)) in {what}, got {forms.describe(entry)}")
        ident = forms.string(entry.items[0], f"{what} id")
        if names is not None and not names.fullmatch(ident):
            forms.fail(
                entry.items[0],
                f"{what} id {ident!r} is not a name: use letters, digits and . _ -"
                " (starting with a letter or digit, at most 128)",
            )
        if ident in seen:
            forms.fail(entry, f"duplicate {what} {ident!r} in run (first at {seen[ident]})")
        seen[ident] = entry.pos or START
        where = f"{what} {ident!r}"
        fields = forms.fields(entry, where, ("target",))
        forms.required(entry, fields, where, "target")
        (target,) = forms.args(fields["target"], "target", 1)
        mounts.append((ident, forms.string(target, "target"), entry))
    return mounts


def _parse_run(form: SList, scope: Scope) -> Run:
    fields = forms.fields(form, "run", ("cache", "network", "secrets", "shell"))
    forms.required(form, fields, "run", "shell")
    (command,) = forms.args(fields["shell"], "run shell", 1)
    cache: tuple[Cache, ...] = ()
    secrets: tuple[Secret, ...] = ()
    network: tuple[str, ...] = ()
    if "cache" in fields:
        entries = _mounts(fields["cache"], "cache", CACHE_NAME)
        cache = tuple(Cache(i, t, pos=e.pos) for i, t, e in entries)
    if "secrets" in fields:
        secrets = tuple(Secret(i, t, pos=e.pos) for i, t, e in _mounts(fields["secrets"], "secret"))
    if "network" in fields:
        network = tuple(forms.string(n, "network") for n in fields["network"].items[1:])
    return Run(
        forms.string(command, "run shell", empty_ok=True),
        cache=cache,
        network=network,
        secrets=secrets,
        pos=form.pos,
    )


def _copy_source(field_form: SList, scope: Scope) -> str | None:
    (source,) = forms.args(field_form, "copy from", 1)
    if isinstance(source, Atom) and source.value == "context":
        return None
    if forms.head(source) != "build":
        forms.fail(source, f"copy from takes context or (build NAME), got {forms.describe(source)}")
    assert isinstance(source, SList)
    (name_node,) = forms.args(source, "build", 1)
    name = forms.string(name_node, "build name")
    if name not in scope:
        if not scope:
            forms.fail(
                name_node,
                f"unknown build {name!r}: no (build ...) is declared here",
                hint="declare it first: ((build NAME ((from BASE) OP...)) (from BASE) OP...)",
            )
        known = ", ".join(sorted(scope))
        forms.fail(
            name_node,
            f"unknown build {name!r}{forms.suggest(name, scope)}",
            hint=f"the builds declared here are {known}",
        )
    return name


def _parse_copy(form: SList, scope: Scope) -> Copy:
    fields = forms.fields(form, "copy", ("from", "src", "dst", "exclude"))
    forms.required(form, fields, "copy", "src", "dst")
    if len(fields["src"].items) < 2:
        forms.fail(fields["src"], "src needs at least one path")
    src = tuple(forms.string(s, "src") for s in fields["src"].items[1:])
    (dst,) = forms.args(fields["dst"], "dst", 1)
    source = _copy_source(fields["from"], scope) if "from" in fields else None
    excluded = fields["exclude"].items[1:] if "exclude" in fields else ()
    exclude = tuple(forms.string(e, "exclude") for e in excluded)
    return Copy(src, forms.string(dst, "dst"), from_build=source, exclude=exclude, pos=form.pos)


_OP_PARSERS: dict[str, Callable[[SList, Scope], Op]] = {
    "comment": _parse_comment,
    "workdir": _parse_workdir,
    "shell": _parse_shell,
    "env": _parse_env,
    "user": _parse_user,
    "run": _parse_run,
    "copy": _parse_copy,
}


def parse_op(node: Sexp, scope: Scope) -> Op:
    """One op after (from BASE); `scope` holds the child builds a copy may name."""
    name = forms.head(node)
    if name is None:
        forms.fail(node, f"expected an op like (run ...), got {forms.describe(node)}")
    assert isinstance(node, SList)
    if name == "from":
        forms.fail(node, "a spec has one (from ...); use (build NAME SPEC) for another stage")
    if name == "build":
        forms.fail(node, "(build ...) must come before (from ...)")
    parser = _OP_PARSERS.get(name)
    if parser is None:
        forms.fail(
            node.items[0],
            f"unknown op {name!r}{forms.suggest(name, OP_NAMES)}",
            hint=f"the ops are {', '.join(OP_NAMES)}",
        )
    return parser(node, scope)
