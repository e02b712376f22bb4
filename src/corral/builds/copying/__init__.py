"""Copy steps: what a `copy` takes, where it lands in the guest, and the tar that carries it there.

A copy from the build context, walked once (`ContextCopy`, context_copy.py):

    manifest(context, srcs, exclude)      context_manifest.py: every file, directory and
                                          symlink taken, sorted by path; the step's ID is
                                          made from these entries (step_ids.copy_material)
    plan(entries, srcs, dst, workdir)     placement.py: the absolute guest path each entry
                                          lands at, after the parent directories it needs
    tar_stream(context, members, ...)     context_copy.py: the tar of those members, in
                                          pieces (tar_writer.py), each file checked against
                                          the manifest as it is read
    extract_command(uid, gid, dirs)       guest_commands.py: the guest argv (run as root)
                                          that creates the missing parent directories and
                                          unpacks the tar at /

A copy `(from (build NAME))` takes its files from a VM booted on the child build's result:
`guest_export_command` writes a tar of the sources there, and child_build.py reads it:
`manifest_from_tar` makes the same entries from it as `manifest` would from the same tree,
and `retarget_tar` rewrites it, in one pass, to the paths `plan` would give, for
`extract_command` with `parent_dirs`.

The rules, as obuilder and Docker's COPY have them: sources are relative to the context (or
to the child's `/`) and may not leave it (sources.py); symlinks are copied as symlinks, never
followed; `exclude` holds basenames (globs allowed) skipped at any depth below a source;
fifos, sockets and devices are refused; modes are normalised and everything copied is owned
by the step's numeric uid:gid (entries.py).
"""

from corral.builds.copying.child_build import manifest_from_tar, retarget_tar
from corral.builds.copying.context_copy import ContextCopy, tar_stream
from corral.builds.copying.context_manifest import manifest
from corral.builds.copying.entries import (
    DIR_MODE,
    EXEC_MODE,
    FILE_MODE,
    LINK_MODE,
    Entry,
    Kind,
    TarMember,
)
from corral.builds.copying.guest_commands import extract_command, guest_export_command
from corral.builds.copying.placement import parent_dirs, plan
from corral.builds.copying.tar_writer import CHUNK

__all__ = [
    "CHUNK",
    "DIR_MODE",
    "EXEC_MODE",
    "FILE_MODE",
    "LINK_MODE",
    "ContextCopy",
    "Entry",
    "Kind",
    "TarMember",
    "extract_command",
    "guest_export_command",
    "manifest",
    "manifest_from_tar",
    "parent_dirs",
    "plan",
    "retarget_tar",
    "tar_stream",
]
