"""Access tokens an attacker might try, made from a genuine one or from scratch: each must be
refused by core/auth.py and, through the HTTP API, with 401."""

from __future__ import annotations

import base64
import json
import time

import jwt

from energy_tracker.core.auth import issue_access_token


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(user_id: str, issuer: str, **overrides: object) -> dict:
    now = int(time.time())
    claims = {"sub": user_id, "role": "user", "iss": issuer, "iat": now, "exp": now + 900}
    return {**claims, "typ": "access", **overrides}


def forged_tokens(user_id: str, *, secret: str, issuer: str) -> dict[str, str]:
    """Name -> token, for a user who exists, none of which may be accepted."""
    genuine = issue_access_token(user_id, "user", secret=secret, issuer=issuer, ttl_s=900)
    header, _payload, signature = genuine.split(".")
    as_admin = _b64(_claims(user_id, issuer, role="admin"))
    return {
        "tampered (role admin, old signature)": f"{header}.{as_admin}.{signature}",
        "tampered signature": f"{header}.{_payload}.{signature[:-4]}AAAA",
        "expired": issue_access_token(
            user_id, "user", secret=secret, issuer=issuer, ttl_s=900, now=time.time() - 3600
        ),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(user_id, issuer))}.",
        "alg HS512, same secret": jwt.encode(
            _claims(user_id, issuer), secret + "-padding-for-hs512", algorithm="HS512"
        ),
        "wrong issuer": issue_access_token(
            user_id, "user", secret=secret, issuer="someone-else", ttl_s=900
        ),
        "wrong secret": issue_access_token(
            user_id, "user", secret="not-" + secret, issuer=issuer, ttl_s=900
        ),
        "not an access token (typ refresh)": jwt.encode(
            _claims(user_id, issuer, typ="refresh"), secret, algorithm="HS256"
        ),
        "no expiry": jwt.encode(
            {k: v for k, v in _claims(user_id, issuer).items() if k != "exp"},
            secret,
            algorithm="HS256",
        ),
        "garbage": "not.a.jwt",
    }
