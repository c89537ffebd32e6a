"""Where a device sits in its home: the checks on a role and a parent before they are stored.

The consumption formula (core.consumption) trusts what is stored: a sub-meter has a parent in
the same home, the parent can hold it, and following parents never comes back to where it
started. Each broken rule is a 422 naming the field to change.
"""

from __future__ import annotations

from collections.abc import Sequence

from energy_tracker.core.consumption import LOADS, PARENT_ROLES, Role
from energy_tracker.core.directory import DeviceContext
from energy_tracker.core.errors import ApiError


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid", f"{field}: {message}", [{"field": field, "message": message}])


def check_placement(
    home: Sequence[DeviceContext],
    device_id: str | None,
    role: Role,
    parent_id: str | None,
) -> None:
    """Raise a 422 unless `device_id` (None: a device being created) may have `role` inside
    `parent_id`, among the devices of its home `home` (the owner's: later, the household's)."""
    by_id = {d.device_id: d for d in home}
    if parent_id is None:
        if role is Role.SUB:
            raise _invalid("parent_id", "a sub-meter needs the id of the device it sits inside")
    else:
        if role not in LOADS:
            raise _invalid(
                "parent_id", f"a {role} device sits inside no other device: leave it null"
            )
        if parent_id == device_id:
            raise _invalid("parent_id", "a device cannot sit inside itself")
        parent = by_id.get(parent_id)
        if parent is None:
            raise _invalid("parent_id", "no such device in this home")
        if parent.role not in PARENT_ROLES:
            raise _invalid(
                "parent_id", f"a {parent.role} device holds no other: choose a grid meter or a load"
            )
        seen = {parent_id}
        cursor = parent.parent_id
        while cursor is not None and cursor in by_id and cursor not in seen:
            if cursor == device_id:
                raise _invalid("parent_id", "the parent sits inside this device: that is a loop")
            seen.add(cursor)
            cursor = by_id[cursor].parent_id
    if device_id is not None and role not in PARENT_ROLES:
        inside = sorted(d.name for d in home if d.parent_id == device_id)
        if inside:
            raise _invalid(
                "role",
                f"a {role} device holds no other, and {', '.join(inside)} sit inside this one: "
                "move them first",
            )
