"""Access tokens: a genuine one verifies; tampered, expired, `alg: none`, another algorithm,
another issuer or another secret never does. The same tokens meet 401 through the HTTP API in
tests/e2e/test_authorization.py."""

from __future__ import annotations

import pytest

from energy_tracker.core.auth import InvalidToken, issue_access_token, verify_access_token
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
