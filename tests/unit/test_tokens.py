"""Access tokens: a genuine one verifies; tampered, expired, `alg: none`, another algorithm,
another issuer or another secret never does. The same tokens meet 401 through the HTTP API in
tests/e2e/test_authorization.py."""

from __future__ import annotations

import asyncio

import pytest

from energy_tracker.core.auth import (
    InvalidToken,
    hash_password,
    issue_access_token,
    verify_access_token,
    verify_password,
)
from tests.forged_tokens import forged_tokens

SECRET = "unit-test-secret-that-is-long-enough-0123456789"
ISSUER = "energy-tracker"
USER = "5b0a8f5e-0000-4000-8000-000000000001"


def test_a_genuine_token_verifies() -> None:
    token = issue_access_token(USER, "admin", secret=SECRET, issuer=ISSUER, ttl_s=60)
    identity = verify_access_token(token, secret=SECRET, issuer=ISSUER)
    assert (identity.kind, identity.user_id, identity.role) == ("user", USER, "admin")


@pytest.mark.parametrize("name", sorted(forged_tokens(USER, secret=SECRET, issuer=ISSUER)))
def test_a_forged_token_is_refused(name: str) -> None:
    token = forged_tokens(USER, secret=SECRET, issuer=ISSUER)[name]
    with pytest.raises(InvalidToken):
        verify_access_token(token, secret=SECRET, issuer=ISSUER)


async def test_password_hashing_leaves_the_event_loop_free() -> None:
    # Argon2 (64 MiB, tens of ms) used to run on the loop: nothing else ran until it was done.
    # A coroutine that yields in a loop counts how often it ran while one hash and one verify
    # were under way; on the loop it would not have run at all.
    done, turns = False, 0

    async def other_requests() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_requests())
    await asyncio.sleep(0)
    started = turns
    digest = await hash_password("a long password")
    assert await verify_password(digest, "a long password")
    assert not await verify_password(digest, "another password")
    done = True
    await other
    assert turns > started + 1
