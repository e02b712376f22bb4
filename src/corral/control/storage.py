"""Storage pools, storage objects and boot sources: the files VMs boot from, by reference.

A pool is a directory on the hosts (`local`) or an NFS mount point present on every host (`nfs`).
Pools may only be created under the operator's storage roots (`storage_roots` in the config);
an object's `config.path` must lie inside its pool's path, with no `..` component. Where the
paths exist on this machine (the embedded single-host server, or a shared mount) they are
looked at without following links: a symlink on the way is refused, and an object's size is
read only from a regular file reached that way. None of this is what keeps a VM inside the
roots: the node checks its own roots again, and opens the file without following links, when
it uses it. Deleting what is still used (a pool with objects, an object used by a boot source or
VM, a boot source used by a VM) is refused with a 409 that names the users.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from corral import confine
from corral.control.types import BootSourceCreate, StorageObjectCreate, StoragePoolCreate
from corral.db.models import BootSource, StorageObject, StoragePool
from corral.db.repositories import (
    BootSourceRepository,
    StorageObjectRepository,
    StoragePoolRepository,
)
from corral.errors import Conflict, InvalidInput, NotFound
from corral.storage_roots import under_root

if TYPE_CHECKING:
    from corral.control.plane import ControlPlane


def contained_path(pool_path: str, object_path: str) -> str:
    """The object's absolute path (relative ones are in the pool), if it lies inside the pool;
    InvalidInput otherwise. Only the text is looked at."""
    pool = PurePosixPath(pool_path)
    given = PurePosixPath(object_path)
    path = given if given.is_absolute() else pool / given
    if ".." in path.parts:
        raise InvalidInput(f"config.path must not contain '..': {object_path!r}")
    if path == pool or not path.is_relative_to(pool):
        raise InvalidInput(f"config.path {str(path)!r} is not inside the pool's path {str(pool)!r}")
    return str(path)


def look_here(roots: Sequence[Path], path: str) -> os.stat_result | None:
    """What `path` (under one of roots) is on this machine, looked at without following links.

    None when it is not here (this server does not share the nodes' files, or the file is not
    there yet). A symlink on the way below the root is refused: nodes would refuse it too.
    """
    root, parts = under_root(roots, path, "config.path")
    here = root
    for index, part in enumerate(parts):
        here = here / part
        if here.is_symlink():
            shown = "/".join(parts[: index + 1])
            raise InvalidInput(
                f"config.path {path!r} goes through a symbolic link ({shown!r} in {root}): "
                "storage paths are used without following links"
            )
        if not os.path.lexists(here):
            return None
    if not parts:
        return None
    # Each part was seen not to be a link; read the final answer through a walk that cannot
    # follow one either, should a link have been swapped in meanwhile.
    with confine.open_dir(root, parts[:-1], what="config.path") as dir_fd:
        try:
            return os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None


class StoragePoolService:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def create(self, data: StoragePoolCreate) -> StoragePool:
        config = data.config.model_dump(exclude_none=True)
        roots = self.plane.settings.storage_roots
        root, parts = under_root(roots, config["path"], "config.path")
        config["path"] = str(root.joinpath(*parts))
        found = look_here(roots, config["path"])
        if found is not None and not stat.S_ISDIR(found.st_mode):
            raise InvalidInput(f"config.path {config['path']!r} is not a directory")

        def create(session: Session) -> StoragePool:
            pools = StoragePoolRepository(session)
            if pools.name_taken(data.name):
                raise Conflict(f"a storage pool named {data.name!r} already exists")
            return pools.add(
                StoragePool(
                    id=uuid.uuid4(), name=data.name, pool_type=data.pool_type, config=config
                )
            )

        return await self.plane.write(create)

    async def list(self) -> list[StoragePool]:
        return await self.plane.read(lambda s: list(StoragePoolRepository(s).list()))

    async def get(self, pool_id: uuid.UUID) -> StoragePool:
        pool = await self.plane.read(lambda s: StoragePoolRepository(s).get(pool_id))
        if pool is None:
            raise NotFound(f"no storage pool {pool_id}")
        return pool

    async def delete(self, pool_id: uuid.UUID) -> None:
        def delete(session: Session) -> None:
            pools = StoragePoolRepository(session)
            pool = pools.get(pool_id)
            if pool is None:
                raise NotFound(f"no storage pool {pool_id}")
            if pools.has_objects(pool_id):
                raise Conflict(
                    f"storage pool {pool.name!r} still holds storage objects",
                    hint="delete its storage objects first",
                )
            pools.delete(pool)

        await self.plane.write(delete)


class StorageObjectService:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def create(self, data: StorageObjectCreate) -> StorageObject:
        def create(session: Session) -> StorageObject:
            objects = StorageObjectRepository(session)
            pool = StoragePoolRepository(session).get(data.storage_pool_id)
            if pool is None:
                raise InvalidInput(f"storage_pool_id: no storage pool {data.storage_pool_id}")
            if objects.name_taken(data.name):
                raise Conflict(f"a storage object named {data.name!r} already exists")
            path = contained_path(pool.config["path"], data.config.path)
            found = look_here(self.plane.settings.storage_roots, path)
            if found is not None and not stat.S_ISREG(found.st_mode):
                raise InvalidInput(f"config.path {path!r} is not a regular file")
            size = data.size_bytes or (found.st_size if found is not None else 0)
            return objects.add(
                StorageObject(
                    id=uuid.uuid4(),
                    name=data.name,
                    storage_pool_id=pool.id,
                    object_type=data.object_type,
                    size_bytes=size,
                    config={"path": path},
                )
            )

        return await self.plane.write(create)

    async def list(self) -> list[StorageObject]:
        return await self.plane.read(lambda s: list(StorageObjectRepository(s).list()))

    async def get(self, object_id: uuid.UUID) -> StorageObject:
        obj = await self.plane.read(lambda s: StorageObjectRepository(s).get(object_id))
        if obj is None:
            raise NotFound(f"no storage object {object_id}")
        return obj

    async def delete(self, object_id: uuid.UUID) -> None:
        def delete(session: Session) -> None:
            objects = StorageObjectRepository(session)
            obj = objects.get(object_id)
            if obj is None:
                raise NotFound(f"no storage object {object_id}")
            users = objects.users(object_id)
            if users:
                raise Conflict(f"storage object {obj.name!r} is used by {', '.join(users)}")
            objects.delete(obj)

        await self.plane.write(delete)


class BootSourceService:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def create(self, data: BootSourceCreate) -> BootSource:
        def create(session: Session) -> BootSource:
            sources = BootSourceRepository(session)
            objects = StorageObjectRepository(session)
            for field, object_id, kind in (
                ("kernel_image_id", data.kernel_image_id, "kernel"),
                ("initrd_image_id", data.initrd_image_id, "initrd"),
            ):
                if object_id is None:
                    continue
                obj = objects.get(object_id)
                if obj is None:
                    raise InvalidInput(f"{field}: no storage object {object_id}")
                if obj.object_type != kind:
                    raise InvalidInput(
                        f"{field}: storage object {obj.name!r} is a {obj.object_type}, not a {kind}"
                    )
            if sources.name_taken(data.name):
                raise Conflict(f"a boot source named {data.name!r} already exists")
            return sources.add(BootSource(id=uuid.uuid4(), **data.model_dump()))

        return await self.plane.write(create)

    async def list(self) -> list[BootSource]:
        return await self.plane.read(lambda s: list(BootSourceRepository(s).list()))

    async def get(self, source_id: uuid.UUID) -> BootSource:
        source = await self.plane.read(lambda s: BootSourceRepository(s).get(source_id))
        if source is None:
            raise NotFound(f"no boot source {source_id}")
        return source

    async def delete(self, source_id: uuid.UUID) -> None:
        def delete(session: Session) -> None:
            sources = BootSourceRepository(session)
            source = sources.get(source_id)
            if source is None:
                raise NotFound(f"no boot source {source_id}")
            users = sources.users(source_id)
            if users:
                raise Conflict(f"boot source {source.name!r} is used by {', '.join(users)}")
            sources.delete(source)

        await self.plane.write(delete)
