"""The devices store in the metadata database; it is also the `core.directory.DeviceDirectory`
the other services look devices up through (injected by app.py)."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, Select, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from energy_tracker.core.consumption import DEFAULT_ROLE, Role
from energy_tracker.core.directory import DeviceContext, HouseholdProfile, directory_changed
from energy_tracker.core.stores.metadata import Conflict, Database
from energy_tracker.core.stores.schema import (
    device_has_active_owner,
    devices,
    household_members,
    households,
)
from energy_tracker.services.devices.models import Device

UPDATABLE = frozenset(
    {"name", "type", "timezone", "location", "meta", "disabled", "role", "parent_id"}
)

# Every column but the key hash, which stays inside the store; labelled by key, so that the
# `metadata` column comes back as `meta`.
_DEVICE_COLUMNS = [column.label(column.key) for column in devices.c if column.key != "api_key_hash"]


class DeviceStore:
    """Devices, their ingest-key hashes and their households' context; one transaction per call.

    Implements `DeviceDirectory` (contexts, in_households, ids_by_meta, household_profiles).
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        owner_id: str,
        name: str,
        type: str,
        api_key_hash: str,
        timezone: str | None = None,
        location: str | None = None,
        meta: dict[str, Any] | None = None,
        household_id: str | None = None,
        role: str = DEFAULT_ROLE,
        parent_id: str | None = None,
    ) -> Device:
        """Register a device in a household (None: the oldest one `owner_id` owns); Conflict
        if the key hash is taken or the owner or household does not exist. The caller has
        checked the role and parent (`services.devices.placement`)."""
        if household_id is None:
            household_id = await self._own_household(owner_id)
        device = Device(
            id=str(uuid.uuid4()),
            owner_id=owner_id,
            household_id=household_id or "",
            name=name,
            type=type,
            timezone=timezone,
            location=location,
            meta=meta,
            disabled=False,
            created_at=datetime.now(UTC),
            role=role,
            parent_id=parent_id,
        )
        try:
            async with self._db.begin() as conn:
                await conn.execute(
                    devices.insert().values(**vars(device), api_key_hash=api_key_hash)
                )
        except IntegrityError as exc:
            raise Conflict("device key hash already in use, or the owner does not exist") from exc
        directory_changed()
        return device

    async def _own_household(self, owner_id: str) -> str | None:
        m = household_members.c
        query = (
            select(m.household_id)
            .where(m.user_id == owner_id, m.role == "owner")
            .order_by(m.joined_at, m.household_id)
            .limit(1)
        )
        async with self._db.begin() as conn:
            return await conn.scalar(query)

    async def get(self, device_id: str) -> Device | None:
        """The device with this id, if any."""
        async with self._db.begin() as conn:
            row = (await conn.execute(_select().where(devices.c.id == device_id))).first()
        return _device(row) if row else None

    async def shown(self, device_id: str) -> tuple[Device, str] | None:
        """The device with this id and the time zone it is shown in (its own, else its
        household's), in one query: what GET /devices/{id} needs."""
        zone = func.coalesce(devices.c.timezone, households.c.timezone).label("shown_timezone")
        query = (
            select(*_DEVICE_COLUMNS, zone)
            .join(households, households.c.id == devices.c.household_id)
            .where(devices.c.id == device_id)
        )
        async with self._db.begin() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        fields = dict(row._mapping)
        shown = fields.pop("shown_timezone")
        return Device(**fields), shown

    async def list(
        self, household_ids: Collection[str] | None, limit: int = 100, offset: int = 0
    ) -> builtins.list[Device]:
        """A page of these households' devices, or everyone's (None: admins), oldest first."""
        query = _select().order_by(devices.c.created_at, devices.c.id).limit(limit).offset(offset)
        if household_ids is not None:
            query = query.where(devices.c.household_id.in_(list(household_ids)))
        async with self._db.begin() as conn:
            rows = (await conn.execute(query)).all()
        return [_device(row) for row in rows]

    async def update(self, device_id: str, **fields: Any) -> Device | None:
        """Change fields (see UPDATABLE) and return the result; None if no such device."""
        unknown = fields.keys() - UPDATABLE
        if unknown:
            raise ValueError(f"cannot update device fields {sorted(unknown)}")
        async with self._db.begin() as conn:
            if fields:
                await conn.execute(
                    update(devices).where(devices.c.id == device_id).values(**fields)
                )
            row = (await conn.execute(_select().where(devices.c.id == device_id))).first()
        directory_changed()
        return _device(row) if row else None

    async def delete(self, device_id: str) -> bool:
        """Remove a device; False if there was none. The devices inside it go top level (a
        `sub` becomes a `consumer`), in the same transaction, so no parent_id dangles."""
        async with self._db.begin() as conn:
            inside = devices.c.parent_id == device_id
            await conn.execute(
                update(devices).where(inside, devices.c.role == Role.SUB).values(role=DEFAULT_ROLE)
            )
            await conn.execute(update(devices).where(inside).values(parent_id=None))
            result = await conn.execute(delete(devices).where(devices.c.id == device_id))
        directory_changed()
        return result.rowcount == 1

    async def set_key_hash(self, device_id: str, api_key_hash: str) -> bool:
        """Replace a device's ingest key (rotation): the old key stops working at once."""
        try:
            async with self._db.begin() as conn:
                result = await conn.execute(
                    update(devices)
                    .where(devices.c.id == device_id)
                    .values(api_key_hash=api_key_hash)
                )
        except IntegrityError as exc:
            raise Conflict("device key hash already in use") from exc
        return result.rowcount == 1

    async def by_key_hash(self, api_key_hash: str) -> Device | None:
        """The device an ingest key belongs to (looked up by the key's sha256 hex)."""
        query = _select().where(devices.c.api_key_hash == api_key_hash)
        async with self._db.begin() as conn:
            row = (await conn.execute(query)).first()
        return _device(row) if row else None

    async def contexts_by_key_hash(
        self, api_key_hashes: Collection[str]
    ) -> dict[str, DeviceContext]:
        """The context of the device of each of these ingest key digests that belongs to one,
        by digest, in one query (authentication looks up many new keys at once under load)."""
        wanted = set(api_key_hashes)
        if not wanted:
            return {}
        query = _contexts().add_columns(devices.c.api_key_hash)
        async with self._db.begin() as conn:
            rows = (await conn.execute(query.where(devices.c.api_key_hash.in_(wanted)))).all()
        return {row.api_key_hash: _context(row) for row in rows}

    async def ids_by_meta(self, key: str, value: str) -> builtins.list[str]:
        """Ids of the devices whose metadata maps `key` to the string `value` (for instance the
        Tasmota topic a device publishes under), in creation order.

        The JSON path is compared by each dialect's own operator (json_extract, JSON_EXTRACT,
        ->>); there is no index on it, so callers cache the answer for a short while.
        """
        query = (
            select(devices.c.id)
            .where(devices.c.meta[key].as_string() == value)
            .order_by(devices.c.created_at, devices.c.id)
        )
        async with self._db.begin() as conn:
            return list((await conn.scalars(query)).all())

    async def contexts(self, device_ids: Collection[str]) -> dict[str, DeviceContext]:
        """Household, zone, currency, tariff and enabled state of each known device, in one query.

        Unknown ids are simply absent from the result, so the caller can reject them.
        """
        wanted = set(device_ids)
        if not wanted:
            return {}
        async with self._db.begin() as conn:
            rows = (await conn.execute(_contexts().where(devices.c.id.in_(wanted)))).all()
        return {row.id: _context(row) for row in rows}

    async def in_households(self, household_ids: Collection[str]) -> builtins.list[DeviceContext]:
        """The contexts of all the devices of these households, oldest first."""
        if not household_ids:
            return []
        query = (
            _contexts()
            .where(devices.c.household_id.in_(list(household_ids)))
            .order_by(devices.c.created_at, devices.c.id)
        )
        async with self._db.begin() as conn:
            rows = (await conn.execute(query)).all()
        return [_context(row) for row in rows]

    async def household_profiles(
        self, household_ids: Collection[str]
    ) -> dict[str, HouseholdProfile]:
        """Name, zone, currency and country of each of these households that exists."""
        if not household_ids:
            return {}
        h = households.c
        query = select(h.id, h.name, h.timezone, h.currency, h.country).where(
            h.id.in_(list(household_ids))
        )
        async with self._db.begin() as conn:
            rows = (await conn.execute(query)).all()
        return {
            r.id: HouseholdProfile(r.id, r.name, r.timezone, r.currency, r.country) for r in rows
        }


def _contexts() -> Select[Any]:
    return select(
        devices.c.id,
        devices.c.owner_id,
        devices.c.household_id,
        devices.c.name,
        devices.c.timezone,
        devices.c.disabled,
        devices.c.role,
        devices.c.parent_id,
        households.c.timezone.label("household_timezone"),
        households.c.currency,
        households.c.tariff,
        device_has_active_owner().label("has_active_owner"),
    ).join(households, households.c.id == devices.c.household_id)


def _context(row: Row[Any]) -> DeviceContext:
    return DeviceContext(
        device_id=row.id,
        owner_id=row.owner_id,
        name=row.name,
        timezone=row.timezone or row.household_timezone,
        currency=row.currency,
        tariff=row.tariff,
        enabled=not row.disabled and bool(row.has_active_owner),
        household_id=row.household_id,
        role=Role(row.role),
        parent_id=row.parent_id,
    )


def _select() -> Select[Any]:
    return select(*_DEVICE_COLUMNS)


def _device(row: Row[Any]) -> Device:
    return Device(**row._mapping)
