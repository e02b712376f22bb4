"""The guest side of a copy: the shell commands that unpack a copy's tar, or export one.

`extract_command` runs as root in the step's VM, creates the missing parent directories
(owned by the step's uid:gid, mode 0755) and unpacks the tar at `/`. `guest_export_command`
runs in a VM booted on a child build's result and writes a tar of the sources, for
`(from (build NAME))` (child_build.py reads it). Both are POSIX sh that work with GNU and
busybox tar, find and xargs alike.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from corral.builds.copying.sources import exclude_names, sources
from corral.errors import InvalidInput

# $1 is the root; the rest are the parent directories, relative and starting "./". GNU tar
# gets --same-owner/--numeric-owner spelt out, and --keep-directory-symlink so a copied "lib/"
# does not replace a merged-/usr /lib symlink; busybox tar as root restores numeric owners
# (the archive has no names) and modes by default, keeps a symlinked directory, and lacks
# the other flags, so they go only to GNU tar. busybox leaves symlinks themselves root's.
_EXTRACT = """set -e
cd "$1"
shift
for d in "$@"; do
  if [ ! -d "$d" ]; then mkdir "$d"; chown @OWNER@ "$d"; chmod 755 "$d"; fi
done
case "$(tar --version 2>/dev/null)" in
  *GNU*) exec tar -x -f - --numeric-owner --same-owner --same-permissions \\
           --keep-directory-symlink ;;
esac
exec tar -x -f -
"""

# $1 is the root; the rest are the sources, relative and starting "./". busybox tar can neither
# exclude nor read names from a file, so find lists what to take (sources first, exclusions
# pruned below them) and xargs hands the names to `tar --no-recursion`; a long list makes
# several archives back to back, which manifest_from_tar and retarget_tar read as one.
_EXPORT = """set -e
cd "$1"
shift
for s in "$@"; do
  if [ ! -e "$s" ] && [ ! -h "$s" ]; then
    echo "corral: copy source ${s#.} not found" >&2
    exit 2
  fi
done
(set -o pipefail) 2>/dev/null && set -o pipefail
for s in "$@"; do
  printf '%s\\0' "$s"
  find "$s" -mindepth 1 @PRUNE@-print0
done | xargs -0 tar -c --no-recursion -f -
"""


def extract_command(uid: int, gid: int, dirs: Sequence[str] = (), *, root: str = "/") -> list[str]:
    """The guest argv, run as root, that unpacks a copy's tar (on stdin) at `root`.

    It first creates each of `dirs` (absolute guest paths, outermost first: `parent_dirs`)
    that is missing, owned by uid:gid with mode 0755; existing ones are left as they are.
    Works with GNU tar and busybox tar.
    """
    if uid < 0 or gid < 0:
        raise InvalidInput(f"owner {uid}:{gid} is not a pair of numeric ids")
    script = _EXTRACT.replace("@OWNER@", f"{int(uid)}:{int(gid)}")
    return ["sh", "-c", script, "sh", root, *(_dot(d.lstrip("/") or ".") for d in dirs)]


def guest_export_command(
    srcs: Sequence[str], exclude: Sequence[str], *, root: str = "/"
) -> list[str]:
    """The guest argv that writes a tar of `srcs` (paths from the guest's `/`) to stdout.

    `exclude` names are pruned at any depth below each source, as `manifest` does; symlinks
    are archived, not followed. A missing source exits 2, naming it on stderr. Works with GNU
    and busybox tar, find and xargs.
    """
    paths = sources(srcs, guest=True)
    names = exclude_names(exclude)
    prune = ""
    if names:
        tests = " -o ".join(f"-name {shlex.quote(name)}" for name in names)
        prune = f"\\( {tests} \\) -prune -o "
    return ["sh", "-c", _EXPORT.replace("@PRUNE@", prune), "sh", root, *map(_dot, paths)]


def _dot(path: str) -> str:
    # "./" keeps a name starting with "-" from reading as an option.
    return path if path == "." else f"./{path}"
