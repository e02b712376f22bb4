"""Storage pools, storage objects and boot sources: the files VMs boot from, by reference.

A pool is a directory on the hosts (`local`) or an NFS mount point present on every host (`nfs`).
An object's `config.path` must lie inside its pool's path: no `..` component, and where the paths
exist on this machine (the embedded single-host server, or a shared mount) no symlink may lead
out of the pool either. Nodes are given only paths that passed this check. Deleting what is still
used (a pool with objects, an object used by a boot source or VM, a boot source used by a VM) is
refused with a 409 that names the users.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from corral.api.schemas import BootSourceCreate, StorageObjectCreate, StoragePoolCreate
from corral.db.models import BootSource, StorageObject, StoragePool
from corral.db.repositories import (
    BootSourceRepository,
    StorageObjectRepository,
    StoragePoolRepository,
)
from corral.errors import Conflict, InvalidInput, NotFound

if TYPE_CHECKING:
    from corral.control.plane import ControlPlane


def _normal(path: str, what: str) -> PurePosixPath:
    if ".." in PurePosixPath(path).parts:
        raise InvalidInput(f"{what} must not contain '..': {path!r}")
    return PurePosixPath(posixpath.normpath(path))


def contained_path(pool_path: str, object_path: str) -> str:
    """The object's absolute path, if it lies inside the pool; InvalidInput otherwise."""
    pool = _normal(pool_path, "the pool's config.path")
    given = PurePosixPath(object_path)
    path = _normal(str(given if given.is_absolute() else pool / given), "config.path")
    if path == pool or not path.is_relative_to(pool):
        raise InvalidInput(f"config.path {str(path)!r} is not inside the pool's path {str(pool)!r}")
    if Path(pool).exists():  # symlinks can only be followed where the files are
        real_pool = PurePosixPath(os.path.realpath(pool))
        real = PurePosixPath(os.path.realpath(path))
        if real == real_pool or not real.is_relative_to(real_pool):
            raise InvalidInput(
                f"config.path {str(path)!r} leads out of the pool's path {str(pool)!r} "
                f"through a symlink (to {str(real)!r})"
            )
    return str(path)


def _local_size(path: str) -> int:
    """The size of the file where it exists on this machine (the embedded case), else 0."""
    try:
        return Path(path).stat().st_size if Path(path).is_file() else 0
    except OSError:
        return 0


class StoragePoolService:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def create(self, data: StoragePoolCreate) -> StoragePool:
        config = data.config.model_dump(exclude_none=True)
        config["path"] = str(_normal(config["path"], "config.path"))

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
            size = data.size_bytes or _local_size(path)
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
