"""/storage-pools, /storage-objects and /boot-sources: what VMs boot from. Creating and
deleting them needs an admin token (a pool names host paths); any token reads them."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from corral.api.deps import ADMIN_ONLY, Authenticated, Plane
from corral.api.errors import ERRORS
from corral.api.schemas import (
    BootSourceCreate,
    BootSourcePublic,
    StorageObjectCreate,
    StorageObjectPublic,
    StoragePoolCreate,
    StoragePoolPublic,
)

router = APIRouter(responses=ERRORS)


@router.post("/storage-pools", status_code=201, tags=["storage"], **ADMIN_ONLY)
async def create_pool(
    body: StoragePoolCreate, response: Response, plane: Plane
) -> StoragePoolPublic:
    pool = await plane.pools.create(body)
    response.headers["Location"] = f"/storage-pools/{pool.id}"
    return StoragePoolPublic.model_validate(pool)


@router.get("/storage-pools", tags=["storage"], dependencies=[Authenticated])
async def list_pools(plane: Plane) -> list[StoragePoolPublic]:
    return [StoragePoolPublic.model_validate(p) for p in await plane.pools.list()]


@router.get("/storage-pools/{pool_id}", tags=["storage"], dependencies=[Authenticated])
async def get_pool(pool_id: uuid.UUID, plane: Plane) -> StoragePoolPublic:
    return StoragePoolPublic.model_validate(await plane.pools.get(pool_id))


@router.delete("/storage-pools/{pool_id}", status_code=204, tags=["storage"], **ADMIN_ONLY)
async def delete_pool(pool_id: uuid.UUID, plane: Plane) -> None:
    await plane.pools.delete(pool_id)


@router.post("/storage-objects", status_code=201, tags=["storage"], **ADMIN_ONLY)
async def create_object(
    body: StorageObjectCreate, response: Response, plane: Plane
) -> StorageObjectPublic:
    obj = await plane.objects.create(body)
    response.headers["Location"] = f"/storage-objects/{obj.id}"
    return StorageObjectPublic.model_validate(obj)


@router.get("/storage-objects", tags=["storage"], dependencies=[Authenticated])
async def list_objects(plane: Plane) -> list[StorageObjectPublic]:
    return [StorageObjectPublic.model_validate(o) for o in await plane.objects.list()]


@router.get("/storage-objects/{object_id}", tags=["storage"], dependencies=[Authenticated])
async def get_object(object_id: uuid.UUID, plane: Plane) -> StorageObjectPublic:
    return StorageObjectPublic.model_validate(await plane.objects.get(object_id))


@router.delete("/storage-objects/{object_id}", status_code=204, tags=["storage"], **ADMIN_ONLY)
async def delete_object(object_id: uuid.UUID, plane: Plane) -> None:
    await plane.objects.delete(object_id)


@router.post("/boot-sources", status_code=201, tags=["boot sources"], **ADMIN_ONLY)
async def create_boot_source(
    body: BootSourceCreate, response: Response, plane: Plane
) -> BootSourcePublic:
    source = await plane.boot_sources.create(body)
    response.headers["Location"] = f"/boot-sources/{source.id}"
    return BootSourcePublic.model_validate(source)


@router.get("/boot-sources", tags=["boot sources"], dependencies=[Authenticated])
async def list_boot_sources(plane: Plane) -> list[BootSourcePublic]:
    return [BootSourcePublic.model_validate(b) for b in await plane.boot_sources.list()]


@router.get("/boot-sources/{source_id}", tags=["boot sources"], dependencies=[Authenticated])
async def get_boot_source(source_id: uuid.UUID, plane: Plane) -> BootSourcePublic:
    return BootSourcePublic.model_validate(await plane.boot_sources.get(source_id))


@router.delete("/boot-sources/{source_id}", status_code=204, tags=["boot sources"], **ADMIN_ONLY)
async def delete_boot_source(source_id: uuid.UUID, plane: Plane) -> None:
    await plane.boot_sources.delete(source_id)
