"""Test helpers for households: every account has one from registration."""

from __future__ import annotations

from typing import Any

from energy_tracker.core.stores.metadata import Database
from energy_tracker.services.users.household_store import HouseholdStore


async def own_household(db: Database, user_id: str, **settings: Any) -> str:
    """The id of the user's own household, after changing its `settings` (time zone,
    currency, tariff...)."""
    homes = HouseholdStore(db)
    household_id = (await homes.memberships(user_id))[0][0]
    if settings:
        await homes.update(household_id, **settings)
    return household_id
