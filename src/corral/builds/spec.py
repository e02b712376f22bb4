"""The obuilder build-spec language: its AST, the parser from text, and the canonical printer.

A spec is one list, as obuilder reads it (`((build NAME SPEC)... (from BASE) OP...)`); the
same forms written without the outer list are accepted too. The ops and their fields are
obuilder's (see its README): `comment`, `workdir`, `shell`, `env`, `user`, `run` and `copy`,
with record fields in any order. Every mistake is a SpecError (an InvalidInput) whose message
starts with the line and column of the offending form or atom. A cache id is a plain name
(CACHE_NAME), never a path: it names a disk file in the build store.

Ops are kept as written: a relative `workdir` stays relative in the AST, and
`effective_workdirs` works out the directory each op runs in. Positions ride along on the
nodes for later messages but take no part in equality, so `parse_spec(format_spec(s)) == s`.

Three renderings, all pure: `format_spec` (the canonical text: fixed field order, defaults left
out, one op per line; paths, commands, comments and values always quoted, names such as the
base image, build, env, cache and network names bare when they read back unchanged; obuilder
reads it too), `format_op` (one op on one line, what a build prints before each step as
`WORKDIR: (op ...)`), and `canonical_bytes` (canonical S-expression bytes for cache keys,
independent of how the text rendering may change).
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, NoReturn

from corral.builds.sexp import (
    START,
    Atom,
    Pos,
    Sexp,
    SList,
    SpecError,
    atom_text,
    read,
    render,
    to_canonical,
)

DEFAULT_SHELL = ("/bin/bash", "-c")  # obuilder's default: specs written for it run unchanged
DEFAULT_WORKDIR = "/"
MAX_BUILD_DEPTH = 16  # nested (build ...) levels; far beyond any real spec, well inside the stack
# A cache id names a disk file in the build store, so it is a plain name, never a path.
CACHE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MAX_ID = 2**32 - 1  # uid_t and gid_t are 32 bits; -1 is reserved


# --- the AST -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    pos: Pos | None = field(default=None, kw_only=True, compare=False, repr=False)


@dataclass(frozen=True)
class Comment(_Node):
    keyword: ClassVar[str] = "comment"
    text: str


@dataclass(frozen=True)
class Workdir(_Node):
    """Set the working directory; a relative path is joined to the current one."""

    keyword: ClassVar[str] = "workdir"
    path: str


@dataclass(frozen=True)
class Shell(_Node):
    """The argv prefix for later `run` commands (default DEFAULT_SHELL)."""

    keyword: ClassVar[str] = "shell"
    args: tuple[str, ...]


@dataclass(frozen=True)
class Env(_Node):
    keyword: ClassVar[str] = "env"
    name: str
    value: str


@dataclass(frozen=True)
class UnixUser(_Node):
    """`(user (uid N) (gid N))`."""

    keyword: ClassVar[str] = "user"
    uid: int
    gid: int


@dataclass(frozen=True)
class NamedUser(_Node):
    """`(user (name NAME))`, obuilder's form for Windows guests."""

    keyword: ClassVar[str] = "user"
    name: str


@dataclass(frozen=True)
class Cache(_Node):
    """A persistent cache `id` mounted at `target` for one `run`."""

    id: str
    target: str


@dataclass(frozen=True)
class Secret(_Node):
    """The secret `id` mounted read-only at `target` for one `run`."""

    id: str
    target: str


@dataclass(frozen=True)
class Run(_Node):
    keyword: ClassVar[str] = "run"
    shell: str  # the command, given as the last argument to the current shell
    cache: tuple[Cache, ...] = ()
    network: tuple[str, ...] = ()
    secrets: tuple[Secret, ...] = ()


@dataclass(frozen=True)
class Copy(_Node):
    """Copy `src` paths to `dst`; from the build context, or from a child build's root."""

    keyword: ClassVar[str] = "copy"
    src: tuple[str, ...]
    dst: str
    from_build: str | None = None  # None: the build context
    exclude: tuple[str, ...] = ()  # basenames to skip


User = UnixUser | NamedUser
Op = Comment | Workdir | Shell | Env | UnixUser | NamedUser | Run | Copy


@dataclass(frozen=True)
class Build(_Node):
    """A named child build; `copy` ops can take files from its result."""

    name: str
    spec: Spec


@dataclass(frozen=True)
class Spec(_Node):
    base: str  # the image named by (from BASE)
    ops: tuple[Op, ...] = ()
    builds: tuple[Build, ...] = ()
    # Where BASE is written: a build that cannot use the image reports this position.
    base_pos: Pos | None = field(default=None, kw_only=True, compare=False, repr=False)


# --- parsing -------------------------------------------------------------------------------

OP_NAMES = ("comment", "workdir", "shell", "env", "user", "run", "copy")
_SPEC_FORM = "((from BASE) OP...)"
_UINT = re.compile(r"[0-9]+")

Scope = Mapping[str, Pos]  # build names visible to copy ops, with where each was declared


def _fail(node: Sexp, reason: str, hint: str | None = None) -> NoReturn:
    raise SpecError(node.pos or START, reason, hint=hint)


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _describe(node: Sexp) -> str:
    if isinstance(node, Atom):
        return repr(node.value)
    if node.items and isinstance(node.items[0], Atom):
        return f"({node.items[0].value} ...)"
    return "()" if not node.items else "a list"


def _head(node: Sexp) -> str | None:
    if isinstance(node, SList) and node.items and isinstance(node.items[0], Atom):
        return node.items[0].value
    return None


def _string(node: Sexp, what: str, *, empty_ok: bool = False) -> str:
    if not isinstance(node, Atom):
        _fail(node, f"{what} must be a string, got {_describe(node)}")
    if "\0" in node.value:
        _fail(node, f"{what} contains a NUL character")
    if not node.value and not empty_ok:
        _fail(node, f"{what} must not be empty")
    return node.value


def _args(form: SList, what: str, count: int) -> tuple[Sexp, ...]:
    args = form.items[1:]
    if len(args) != count:
        values = "one value" if count == 1 else f"{count} values"
        _fail(form, f"{what} takes {values}, got {len(args)}")
    return args


def _fields(form: SList, what: str, allowed: tuple[str, ...]) -> dict[str, SList]:
    """The `(NAME ...)` fields after the head of `form`, by name, each at most once."""
    found: dict[str, SList] = {}
    for item in form.items[1:]:
        name = _head(item)
        if name is None:
            _fail(
                item,
                f"expected a field ({' | '.join(allowed)} ...) in {what}, got {_describe(item)}",
            )
        assert isinstance(item, SList)
        if name not in allowed:
            _fail(
                item.items[0],
                f"unknown field {name!r} in {what}{_suggest(name, allowed)}",
                hint=f"{what} takes the fields {', '.join(allowed)}",
            )
        if name in found:
            _fail(item, f"duplicate field {name!r} in {what} (first at {found[name].pos or START})")
        found[name] = item
    return found


def _required(form: SList, fields: dict[str, SList], what: str, *names: str) -> None:
    for name in names:
        if name not in fields:
            _fail(form, f"missing field {name!r} in {what}")


def _parse_comment(form: SList, scope: Scope) -> Comment:
    (text,) = _args(form, "comment", 1)
    return Comment(_string(text, "comment", empty_ok=True), pos=form.pos)


def _parse_workdir(form: SList, scope: Scope) -> Workdir:
    (path,) = _args(form, "workdir", 1)
    return Workdir(_string(path, "workdir"), pos=form.pos)


def _parse_shell(form: SList, scope: Scope) -> Shell:
    if len(form.items) < 2:
        _fail(form, "shell needs at least one argument, e.g. (shell /bin/sh -c)")
    args = tuple(_string(arg, "shell argument", empty_ok=True) for arg in form.items[1:])
    return Shell(args, pos=form.pos)


def _parse_env(form: SList, scope: Scope) -> Env:
    name, value = _args(form, "env", 2)
    text = _string(name, "env name")
    if "=" in text:
        _fail(name, f"env name {text!r} contains '='")
    return Env(text, _string(value, "env value", empty_ok=True), pos=form.pos)


def _id_number(field_form: SList, what: str) -> int:
    (value,) = _args(field_form, what, 1)
    text = _string(value, what)
    if not _UINT.fullmatch(text) or int(text) >= _MAX_ID:
        _fail(value, f"{what} must be an integer from 0 to {_MAX_ID - 1}, got {text!r}")
    return int(text)


def _parse_user(form: SList, scope: Scope) -> User:
    fields = _fields(form, "user", ("uid", "gid", "name"))
    if "name" in fields:
        if "uid" in fields or "gid" in fields:
            _fail(form, "user takes either (uid N) (gid N) or (name NAME), not both")
        (name,) = _args(fields["name"], "user name", 1)
        return NamedUser(_string(name, "user name"), pos=form.pos)
    if not fields:
        _fail(form, "user needs (uid N) (gid N) or (name NAME)")
    _required(form, fields, "user", "uid", "gid")
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
            _fail(entry, f"expected (ID (target PATH)) in {what}, got {_describe(entry)}")
        ident = _string(entry.items[0], f"{what} id")
        if names is not None and not names.fullmatch(ident):
            _fail(
                entry.items[0],
                f"{what} id {ident!r} is not a name: use letters, digits and . _ -"
                " (starting with a letter or digit, at most 128)",
            )
        if ident in seen:
            _fail(entry, f"duplicate {what} {ident!r} in run (first at {seen[ident]})")
        seen[ident] = entry.pos or START
        where = f"{what} {ident!r}"
        fields = _fields(entry, where, ("target",))
        _required(entry, fields, where, "target")
        (target,) = _args(fields["target"], "target", 1)
        mounts.append((ident, _string(target, "target"), entry))
    return mounts


def _parse_run(form: SList, scope: Scope) -> Run:
    fields = _fields(form, "run", ("cache", "network", "secrets", "shell"))
    _required(form, fields, "run", "shell")
    (command,) = _args(fields["shell"], "run shell", 1)
    cache: tuple[Cache, ...] = ()
    secrets: tuple[Secret, ...] = ()
    network: tuple[str, ...] = ()
    if "cache" in fields:
        entries = _mounts(fields["cache"], "cache", CACHE_NAME)
        cache = tuple(Cache(i, t, pos=e.pos) for i, t, e in entries)
    if "secrets" in fields:
        secrets = tuple(Secret(i, t, pos=e.pos) for i, t, e in _mounts(fields["secrets"], "secret"))
    if "network" in fields:
        network = tuple(_string(n, "network") for n in fields["network"].items[1:])
    return Run(
        _string(command, "run shell", empty_ok=True),
        cache=cache,
        network=network,
        secrets=secrets,
        pos=form.pos,
    )


def _copy_source(field_form: SList, scope: Scope) -> str | None:
    (source,) = _args(field_form, "copy from", 1)
    if isinstance(source, Atom) and source.value == "context":
        return None
    if _head(source) != "build":
        _fail(source, f"copy from takes context or (build NAME), got {_describe(source)}")
    assert isinstance(source, SList)
    (name_node,) = _args(source, "build", 1)
    name = _string(name_node, "build name")
    if name not in scope:
        if not scope:
            _fail(
                name_node,
                f"unknown build {name!r}: no (build ...) is declared here",
                hint="declare it first: ((build NAME ((from BASE) OP...)) (from BASE) OP...)",
            )
        known = ", ".join(sorted(scope))
        _fail(
            name_node,
            f"unknown build {name!r}{_suggest(name, scope)}",
            hint=f"the builds declared here are {known}",
        )
    return name


def _parse_copy(form: SList, scope: Scope) -> Copy:
    fields = _fields(form, "copy", ("from", "src", "dst", "exclude"))
    _required(form, fields, "copy", "src", "dst")
    if len(fields["src"].items) < 2:
        _fail(fields["src"], "src needs at least one path")
    src = tuple(_string(s, "src") for s in fields["src"].items[1:])
    (dst,) = _args(fields["dst"], "dst", 1)
    source = _copy_source(fields["from"], scope) if "from" in fields else None
    excluded = fields["exclude"].items[1:] if "exclude" in fields else ()
    exclude = tuple(_string(e, "exclude") for e in excluded)
    return Copy(src, _string(dst, "dst"), from_build=source, exclude=exclude, pos=form.pos)


_OP_PARSERS: dict[str, Callable[[SList, Scope], Op]] = {
    "comment": _parse_comment,
    "workdir": _parse_workdir,
    "shell": _parse_shell,
    "env": _parse_env,
    "user": _parse_user,
    "run": _parse_run,
    "copy": _parse_copy,
}


def _parse_op(node: Sexp, scope: Scope) -> Op:
    name = _head(node)
    if name is None:
        _fail(node, f"expected an op like (run ...), got {_describe(node)}")
    assert isinstance(node, SList)
    if name == "from":
        _fail(node, "a spec has one (from ...); use (build NAME SPEC) for another stage")
    if name == "build":
        _fail(node, "(build ...) must come before (from ...)")
    parser = _OP_PARSERS.get(name)
    if parser is None:
        _fail(
            node.items[0],
            f"unknown op {name!r}{_suggest(name, OP_NAMES)}",
            hint=f"the ops are {', '.join(OP_NAMES)}",
        )
    return parser(node, scope)


def _parse_build(form: SList, scope: Scope, taken: Scope, depth: int) -> Build:
    """A child build; `taken` holds the names in `scope` and those of the enclosing builds."""
    if len(form.items) != 3:
        _fail(form, f"build takes a name and a spec: (build NAME {_SPEC_FORM})")
    name = _string(form.items[1], "build name")
    if name in taken:
        _fail(form.items[1], f"duplicate build {name!r} (first declared at {taken[name]})")
    body = form.items[2]
    if not isinstance(body, SList):
        _fail(body, f"build {name!r} needs a spec {_SPEC_FORM}, got {_describe(body)}")
    if depth >= MAX_BUILD_DEPTH:
        _fail(form, f"builds are nested more than {MAX_BUILD_DEPTH} deep")
    inside = {**taken, name: form.items[1].pos or START}
    spec = _parse_items(body.items, body.pos or START, scope, inside, depth + 1)
    return Build(name, spec, pos=form.pos)


def _parse_items(
    items: tuple[Sexp, ...], where: Pos, scope: Scope, taken: Scope, depth: int
) -> Spec:
    visible, taken = dict(scope), dict(taken)
    builds: list[Build] = []
    i = 0
    while i < len(items) and _head(items[i]) == "build":
        item = items[i]
        assert isinstance(item, SList)
        build = _parse_build(item, visible, taken, depth)
        visible[build.name] = taken[build.name] = item.items[1].pos or START
        builds.append(build)
        i += 1
    if i == len(items):
        raise SpecError(where, "missing (from BASE)", hint=f"a spec looks like {_SPEC_FORM}")
    if _head(items[i]) != "from":
        item, head = items[i], _head(items[i])
        near = _suggest(head, ("from", "build")) if head else ""
        if any(_head(later) == "from" for later in items[i + 1 :]):
            _fail(
                item,
                f"{_describe(item)} comes before (from ...){near}",
                hint="only (build ...) items may come before (from BASE)",
            )
        _fail(item, f"missing (from BASE): expected it here, got {_describe(item)}{near}")
    from_form = items[i]
    assert isinstance(from_form, SList)
    (base,) = _args(from_form, "from", 1)
    ops = tuple(_parse_op(item, visible) for item in items[i + 1 :])
    return Spec(_string(base, "from"), ops, tuple(builds), pos=where, base_pos=base.pos)


def _top_level(forms: tuple[Sexp, ...]) -> tuple[tuple[Sexp, ...], Pos]:
    """The spec's items: obuilder's one outer list, or the same forms written without it."""
    if not forms:
        raise SpecError(START, "empty spec", hint=f"a spec looks like {_SPEC_FORM}")
    first = forms[0]
    wrapped = isinstance(first, SList) and (not first.items or isinstance(first.items[0], SList))
    if not wrapped:
        return forms, first.pos or START
    if len(forms) > 1:
        _fail(forms[1], "text after the end of the spec", hint=f"a spec is one list {_SPEC_FORM}")
    assert isinstance(first, SList)
    return first.items, first.pos or START


def parse_spec(text: str) -> Spec:
    """Parse a build spec; raise SpecError (`LINE:COL: reason`) on any mistake."""
    items, where = _top_level(read(text))
    return _parse_items(items, where, {}, {}, 0)


# --- printing ------------------------------------------------------------------------------


# Keywords and names are plain atoms (written bare when safe); free text is always quoted.


def _text(value: str) -> Atom:
    return Atom(value, quoted=True)


def _field(name: str, *values: Sexp) -> SList:
    return SList((Atom(name), *values))


def _mount_sexp(ident: str, target: str) -> SList:
    return SList((Atom(ident), _field("target", _text(target))))


def op_sexp(op: Op) -> SList:
    """The canonical S-expression of one op: fixed field order, defaults left out."""
    match op:
        case Comment(text=text):
            args: tuple[Sexp, ...] = (_text(text),)
        case Workdir(path=path):
            args = (_text(path),)
        case Shell(args=shell):
            args = tuple(_text(arg) for arg in shell)
        case Env(name=name, value=value):
            args = (Atom(name), _text(value))
        case UnixUser(uid=uid, gid=gid):
            args = (_field("uid", Atom(str(uid))), _field("gid", Atom(str(gid))))
        case NamedUser(name=name):
            args = (_field("name", Atom(name)),)
        case Run():
            parts: list[Sexp] = []
            if op.cache:
                parts.append(_field("cache", *(_mount_sexp(c.id, c.target) for c in op.cache)))
            if op.network:
                parts.append(_field("network", *(Atom(n) for n in op.network)))
            if op.secrets:
                parts.append(_field("secrets", *(_mount_sexp(s.id, s.target) for s in op.secrets)))
            parts.append(_field("shell", _text(op.shell)))
            args = tuple(parts)
        case Copy():
            parts = []
            if op.from_build is not None:
                parts.append(_field("from", _field("build", Atom(op.from_build))))
            parts.append(_field("src", *(_text(s) for s in op.src)))
            parts.append(_field("dst", _text(op.dst)))
            if op.exclude:
                parts.append(_field("exclude", *(_text(e) for e in op.exclude)))
            args = tuple(parts)
        case _:
            raise TypeError(f"not a build op: {op!r}")
    return SList((Atom(op.keyword), *args))


def spec_sexp(spec: Spec) -> SList:
    """The canonical S-expression of a whole spec, child builds first."""
    builds = (_field("build", Atom(b.name), spec_sexp(b.spec)) for b in spec.builds)
    ops = (op_sexp(op) for op in spec.ops)
    return SList((*builds, _field("from", Atom(spec.base)), *ops))


def format_op(op: Op) -> str:
    """One op on one line, e.g. `(run (network host) (shell "make"))`."""
    return render(op_sexp(op))


def _spec_lines(spec: Spec) -> list[str]:
    items: list[list[str]] = []
    for build in spec.builds:
        child = _spec_lines(build.spec)
        child[-1] += ")"
        items.append(["(build " + atom_text(Atom(build.name))])
        items[-1].extend("  " + line for line in child)
    items.append([render(_field("from", Atom(spec.base)))])
    items.extend([format_op(op)] for op in spec.ops)
    lines = [line for item in items for line in item]
    lines = ["(" + lines[0], *(" " + line for line in lines[1:])]
    lines[-1] += ")"
    return lines


def format_spec(spec: Spec) -> str:
    """The canonical text of a spec: one op per line, child builds indented; obuilder reads it."""
    return "\n".join(_spec_lines(spec)) + "\n"


def canonical_bytes(node: Spec | Op) -> bytes:
    """Stable bytes for cache keys: canonical S-expression bytes of the canonical tree."""
    return to_canonical(spec_sexp(node) if isinstance(node, Spec) else op_sexp(node))


# --- context -------------------------------------------------------------------------------


def resolve_workdir(current: str, path: str) -> str:
    """The directory `(workdir path)` selects when `current` is in effect."""
    return posixpath.join(current, path)


def effective_workdirs(ops: Iterable[Op], start: str = DEFAULT_WORKDIR) -> tuple[str, ...]:
    """For each op, the working directory in effect as it starts.

    A `workdir` op changes the directory for the ops after it, so its own entry is the previous
    directory: the one a build prints before it, as obuilder does.
    """
    current = start
    result: list[str] = []
    for op in ops:
        result.append(current)
        if isinstance(op, Workdir):
            current = resolve_workdir(current, op.path)
    return tuple(result)
