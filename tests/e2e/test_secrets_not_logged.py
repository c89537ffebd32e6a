"""No password, access, refresh or personal access token or device key ever reaches a log line
(even at DEBUG) or a response after the one that handed it out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import ServiceProcess, running_up

PASSWORD = "correct horse battery staple"
WRONG_PASSWORD = "incorrect mule battery staple"


@pytest.fixture
def up_debug(tmp_path: Path) -> Iterator[ServiceProcess]:
    with running_up(tmp_path, "--log-level", "DEBUG") as proc:
        yield proc


class Recorder:
    """Every response body in order, and each secret with the index of the one revealing it."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.bodies: list[str] = []
        self.secrets: dict[str, int] = {PASSWORD: -1, WRONG_PASSWORD: -1}

    def __call__(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        r = self.http.request(method, url, **kwargs)  # type: ignore[arg-type]
        self.bodies.append(r.text)
        return r

    def revealed(self, secret: str) -> str:
        self.secrets[secret] = len(self.bodies) - 1
        return secret


def test_no_secret_in_the_log_or_a_later_response(up_debug: ServiceProcess) -> None:
    api = up_debug.url + "/api/v1"
    with httpx.Client(timeout=30.0) as http:
        call = Recorder(http)
        credentials = {"email": "ada@example.com", "password": PASSWORD}
        assert call("POST", api + "/auth/register", json=credentials).status_code == 201
        r = call("POST", api + "/auth/login", json=credentials)
        access = call.revealed(r.json()["access_token"])
        spent = call.revealed(r.json()["refresh_token"])
        r = call("POST", api + "/auth/refresh", json={"refresh_token": spent})
        access = call.revealed(r.json()["access_token"])
        refresh = call.revealed(r.json()["refresh_token"])
        auth = {"Authorization": f"Bearer {access}"}
        # A spent refresh token, a bearer token in the wrong scheme: refused without an echo.
        assert call("POST", api + "/auth/refresh", json={"refresh_token": spent}).status_code == 401
        assert (
            call("GET", api + "/users/me", headers={"Authorization": f"Token {access}"}).status_code
            == 401
        )
        r = call("POST", api + "/devices", json={"name": "meter", "type": "meter"}, headers=auth)
        device_id, key = r.json()["id"], call.revealed(r.json()["api_key"])
        reading = {"device_id": device_id, "ts": int(time.time() * 1000), "power_w": 230.0}
        r = call(
            "POST", api + "/readings", json={"readings": [reading]}, headers={"X-Device-Key": key}
        )
        assert r.status_code == 202, r.text
        # A key where a device id belongs, and a key that is not one: no echo either.
        r = call(
            "POST",
            api + "/readings",
            json={**reading, "device_id": key},
            headers={"X-Device-Key": key},
        )
        assert r.status_code == 422
        assert (
            call(
                "POST", api + "/readings", json=reading, headers={"X-Device-Key": key + "x"}
            ).status_code
            == 401
        )
        r = call("POST", api + f"/devices/{device_id}/rotate-key", headers=auth)
        new_key = call.revealed(r.json()["api_key"])
        assert (
            call("POST", api + "/readings", json=reading, headers={"X-Device-Key": key}).status_code
            == 401
        )
        r = call("POST", api + "/auth/login", json={**credentials, "password": WRONG_PASSWORD})
        assert r.status_code == 401
        r = call("POST", api + "/auth/login", json={**credentials, "password": "x" * 300})
        assert r.status_code == 422  # too long: refused by validation, still without an echo
        # A personal access token: used, listed, revoked, used again; never shown again.
        r = call(
            "POST", api + "/users/me/tokens", json={"name": "ha", "scope": "read"}, headers=auth
        )
        personal = {"Authorization": f"Bearer {call.revealed(r.json()['token'])}"}
        assert call("GET", api + "/usage", headers=personal).status_code == 200
        assert call("GET", api + "/users/me/tokens", headers=auth).status_code == 200
        r = call("DELETE", api + f"/users/me/tokens/{r.json()['id']}", headers=auth)
        assert r.status_code == 204
        assert call("GET", api + "/usage", headers=personal).status_code == 401
        call("GET", api + "/users/me", headers=auth)
        call("GET", api + f"/devices/{device_id}", headers=auth)
        call("GET", api + "/devices", headers=auth)
        assert (
            call(
                "POST", api + "/auth/logout", json={"refresh_token": refresh}, headers=auth
            ).status_code
            == 204
        )
        assert new_key != key

    up_debug.stop()  # every line written, the last request's included
    log = up_debug.log_path.read_text(errors="replace")
    assert "DEBUG" in log, "the process did not log at DEBUG: the test proves nothing"
    for secret, revealed_at in call.secrets.items():
        assert secret not in log, f"a secret ({secret[:6]}…) is in the log"
        later = [i for i, body in enumerate(call.bodies) if i > revealed_at and secret in body]
        assert not later, f"a secret ({secret[:6]}…) is in later responses {later}"
