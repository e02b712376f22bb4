"""Builds: obuilder build specs, run step by step in VMs with each step a cached layer.

sexp.py reads and writes S-expressions with positions; spec/ is the spec language (syntax
tree, parser, canonical printer). Both are pure.
"""

from corral.builds.sexp import Pos, SpecError
from corral.builds.spec import (
    DEFAULT_SHELL,
    DEFAULT_WORKDIR,
    Build,
    Cache,
    Comment,
    Copy,
    Env,
    NamedUser,
    Op,
    Run,
    Secret,
    Shell,
    Spec,
    UnixUser,
    User,
    Workdir,
    canonical_bytes,
    effective_workdirs,
    format_op,
    format_spec,
    parse_spec,
    resolve_workdir,
)

__all__ = [
    "DEFAULT_SHELL",
    "DEFAULT_WORKDIR",
    "Build",
    "Cache",
    "Comment",
    "Copy",
    "Env",
    "NamedUser",
    "Op",
    "Pos",
    "Run",
    "Secret",
    "Shell",
    "Spec",
    "SpecError",
    "UnixUser",
    "User",
    "Workdir",
    "canonical_bytes",
    "effective_workdirs",
    "format_op",
    "format_spec",
    "parse_spec",
    "resolve_workdir",
]
