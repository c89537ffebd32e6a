"""Routes of the devices service: the registry and each device's ingest key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from energy_tracker.core.auth import new_device_key, secret_digest
from energy_tracker.core.authz import Caller
from energy_tracker.core.consumption import Role
from energy_tracker.core.credentials import CredentialCache, credentials
from energy_tracker.core.errors import ApiError
from energy_tracker.core.http import answers, authorized, not_found
from energy_tracker.core.inputs import TASMOTA_META_KEY, Offset
from energy_tracker.services.devices.models import Device
from energy_tracker.services.devices.placement import check_placement
from energy_tracker.services.devices.schemas import DeviceIn, DeviceOut, DevicePatch, DeviceWithKey
from energy_tracker.services.devices.store import DeviceStore

router = APIRouter(tags=["devices"])

DeviceId = Annotated[str, Path(max_length=64)]
HouseholdId = Annotated[
    str | None, Query(max_length=64, description="One of your households; default: all of them.")
]
Limit = Annotated[int, Query(ge=1, le=1000)]


async def devices(request: Request) -> DeviceStore:
    """FastAPI dependency: the devices store."""
    return request.app.state.devices


async def devices_out(store: DeviceStore, found: list[Device]) -> list[dict]:
    """Response bodies, each with the zone that applies: the device's own, else its household's."""
    contexts = await store.contexts([d.id for d in found])
    return [
        device_out(d, contexts[d.id].timezone if d.id in contexts else d.timezone or "UTC")
        for d in found
    ]


async def one_device_out(store: DeviceStore, device: Device) -> dict:
    """One device as the API shows it, its zone resolved against its household."""
    return (await devices_out(store, [device]))[0]


def device_out(device: Device, timezone: str) -> dict:
    """A device as the API shows it, in `timezone` (its own, else its household's)."""
    return {
        "id": device.id,
        "owner_id": device.owner_id,
        "household_id": device.household_id,
        "name": device.name,
        "type": device.type,
        "timezone": timezone,
        "location": device.location,
        "metadata": device.meta,
        "disabled": device.disabled,
        "created_at": device.created_at.isoformat(),
        "role": device.role,
        "parent_id": device.parent_id,
    }


async def visible_device(store: DeviceStore, device_id: str, caller: Caller) -> Device:
    """The device if the caller may do the route's action on it (see `Caller.check`)."""
    device = await store.get(device_id)
    caller.check(device.household_id if device else None, "device")
    assert device is not None  # check() refused a missing device
    return device


async def _unclaimed(store: DeviceStore, meta: dict | None, device_id: str | None) -> None:
    """409 when the metadata names a Tasmota topic another device has claimed."""
    topic = (meta or {}).get(TASMOTA_META_KEY)
    if isinstance(topic, str) and set(await store.ids_by_meta(TASMOTA_META_KEY, topic)) - {
        device_id
    }:
        raise ApiError(
            409,
            "conflict",
            f"{TASMOTA_META_KEY} {topic!r} is another device's",
            [{"field": f"metadata.{TASMOTA_META_KEY}", "message": "already claimed"}],
        )


@router.post("/devices", status_code=201, response_model=DeviceWithKey, responses=answers(404, 409))
async def create_device(
    body: DeviceIn,
    caller: Caller = Depends(authorized),
    store: DeviceStore = Depends(devices),
) -> dict:
    """Register a device in a household of yours (default: your own); its ingest key is in
    this answer only."""
    household_id = caller.home(body.household_id)
    await _unclaimed(store, body.metadata, None)
    # Only a parent needs its household read (a thousand-device home made each creation read
    # every device: enrolling a fleet was quadratic).
    home = await store.in_households([household_id]) if body.parent_id is not None else []
    check_placement(home, None, body.role, body.parent_id)
    key = new_device_key()
    device = await store.create(
        caller.user_id,
        body.name,
        body.type,
        secret_digest(key),
        timezone=body.timezone,
        location=body.location,
        meta=body.metadata,
        household_id=household_id,
        role=body.role,
        parent_id=body.parent_id,
    )
    return {**await one_device_out(store, device), "api_key": key}


@router.get("/devices", response_model=list[DeviceOut])
async def list_devices(
    limit: Limit = 100,
    offset: Offset = 0,
    household_id: HouseholdId = None,
    caller: Caller = Depends(authorized),
    store: DeviceStore = Depends(devices),
) -> list[dict]:
    """The devices of your households (or of the one named; an admin's: everyone's), oldest
    first."""
    scope = caller.scope(household_id)
    return await devices_out(store, await store.list(scope, limit=limit, offset=offset))


@router.get("/devices/{device_id}", response_model=DeviceOut)
async def get_device(
    device_id: DeviceId,
    caller: Caller = Depends(authorized),
    store: DeviceStore = Depends(devices),
) -> dict:
    """A device of one of your households."""
    found = await store.shown(device_id)
    caller.check(found[0].household_id if found else None, "device")
    assert found is not None  # check() refused a missing device
    return device_out(*found)


@router.patch("/devices/{device_id}", response_model=DeviceOut, responses=answers(409))
async def update_device(
    device_id: DeviceId,
    body: DevicePatch,
    caller: Caller = Depends(authorized),
    store: DeviceStore = Depends(devices),
    cache: CredentialCache = Depends(credentials),
) -> dict:
    """Change a device's fields; `timezone: null` makes it follow its household's."""
    current = await visible_device(store, device_id, caller)
    fields = body.model_dump(exclude_unset=True)
    if "role" in fields or "parent_id" in fields:
        check_placement(
            await store.in_households([current.household_id]),
            device_id,
            Role(fields.get("role", current.role)),
            fields.get("parent_id", current.parent_id),
        )
    if "metadata" in fields:
        fields["meta"] = fields.pop("metadata")
        await _unclaimed(store, fields["meta"], device_id)
    device = await store.update(device_id, **fields)
    if "disabled" in fields:  # the only field a device key's answer depends on
        await cache.forget_device(device_id)
    if device is None:
        raise not_found("device")
    return await one_device_out(store, device)


@router.delete("/devices/{device_id}", status_code=204)
async def delete_device(
    device_id: DeviceId,
    caller: Caller = Depends(authorized),
    store: DeviceStore = Depends(devices),
    cache: CredentialCache = Depends(credentials),
) -> None:
    """Delete a device of one of your households."""
    await visible_device(store, device_id, caller)
    await store.delete(device_id)
    await cache.forget_device(device_id)


@router.post("/devices/{device_id}/rotate-key", response_model=DeviceWithKey)
async def rotate_key(
    device_id: DeviceId,
    caller: Caller = Depends(authorized),
    store: DeviceStore = Depends(devices),
    cache: CredentialCache = Depends(credentials),
) -> dict:
    """Issue a new ingest key: the old one stops working at once."""
    device = await visible_device(store, device_id, caller)
    key = new_device_key()
    await store.set_key_hash(device_id, secret_digest(key))
    await cache.forget_device(device_id)
    return {**await one_device_out(store, device), "api_key": key}
