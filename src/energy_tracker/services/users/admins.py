"""Making an administrator: how the first admin comes to be, from `energy-tracker create-admin`."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import TypeAdapter, ValidationError

from energy_tracker.core.auth import hash_password
from energy_tracker.core.stores.metadata import Conflict
from energy_tracker.services.users.schemas import Email, RegisterIn
from energy_tracker.services.users.store import UserStore

_email = TypeAdapter(Email)


async def ensure_admin(store: UserStore, email: str, password: Callable[[], str]) -> str:
    """Make the account with this email an admin, creating it if there is none; returns what was
    done, for the operator. `password` is called only when the account must be created, and
    must pass the rules of registration. Raises ValueError saying what is not acceptable."""
    try:
        email = str(_email.validate_python(email))
    except ValidationError as exc:
        raise ValueError(f"{email!r} is not an email address: {_reason(exc)}") from None
    existing = await store.by_email(email)
    if existing is not None:
        if existing.role == "admin":
            return f"{existing.email} is already an admin"
        await store.update(existing.id, role="admin")
        disabled = " (the account stays disabled)" if existing.disabled else ""
        return f"{existing.email} is now an admin{disabled}"
    try:
        body = RegisterIn(email=email, password=password())
    except ValidationError as exc:
        raise ValueError(f"the password is not acceptable: {_reason(exc)}") from None
    try:
        user = await store.create(str(body.email), await hash_password(body.password), role="admin")
    except Conflict:
        raise ValueError(f"{email} was registered meanwhile: run the command again") from None
    return f"admin {user.email} created"


def _reason(exc: ValidationError) -> str:
    return "; ".join(str(e["msg"]) for e in exc.errors(include_url=False))
