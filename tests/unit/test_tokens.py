"""Access tokens: a genuine one verifies; tampered, expired, `alg: none`, another algorithm,
another issuer or another secret never does. The same tokens meet 401 through the HTTP API in
tests/e2e/test_authorization.py. Personal access tokens: a genuine one names its id; one
tampered with, truncated or made under another secret does not."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from energy_tracker.core.auth import (
    PERSONAL_TOKEN_PREFIX,
    InvalidToken,
    hash_password,
    issue_access_token,
    new_personal_token,
    personal_token_id,
    token_principal,
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


TOKEN_ID = uuid.UUID("0b1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6")


def test_a_personal_token_names_its_id_and_is_never_the_same_twice() -> None:
    token = new_personal_token(TOKEN_ID, secret=SECRET)
    assert token.startswith(PERSONAL_TOKEN_PREFIX)
    assert personal_token_id(token, secret=SECRET) == str(TOKEN_ID)
    assert new_personal_token(TOKEN_ID, secret=SECRET) != token  # 32 random bytes each


def _flip(token: str, at: int) -> str:
    """The token with the character at `at` changed to another of the base64url alphabet."""
    return token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]


def personal_forgeries() -> dict[str, str]:
    token = new_personal_token(TOKEN_ID, secret=SECRET)
    return {
        "another secret": new_personal_token(TOKEN_ID, secret=SECRET + "x"),
        "id changed": _flip(token, len(PERSONAL_TOKEN_PREFIX) + 2),
        "random part changed": _flip(token, len(PERSONAL_TOKEN_PREFIX) + 30),
        "tag changed": _flip(token, len(token) - 3),
        "truncated": token[:-4],
        "extended": token + "AAAA",
        "no prefix": token[len(PERSONAL_TOKEN_PREFIX) :],
        "a device key's prefix": "etk_" + token[len(PERSONAL_TOKEN_PREFIX) :],
        "not base64": PERSONAL_TOKEN_PREFIX + "é" * 86,
        "empty": PERSONAL_TOKEN_PREFIX,
    }


@pytest.mark.parametrize("name", sorted(personal_forgeries()))
def test_a_forged_personal_token_is_refused(name: str) -> None:
    with pytest.raises(InvalidToken):
        personal_token_id(personal_forgeries()[name], secret=SECRET)


def test_each_kind_of_bearer_token_spends_its_own_budget() -> None:
    session = issue_access_token(USER, "user", secret=SECRET, issuer=ISSUER, ttl_s=60)
    assert token_principal(session, secret=SECRET, issuer=ISSUER) == f"user:{USER}"
    personal = new_personal_token(TOKEN_ID, secret=SECRET)
    assert token_principal(personal, secret=SECRET, issuer=ISSUER) == f"token:{TOKEN_ID}"
    for forged in personal_forgeries().values():
        assert token_principal(forged, secret=SECRET, issuer=ISSUER) is None
    assert token_principal("not.a.jwt", secret=SECRET, issuer=ISSUER) is None
