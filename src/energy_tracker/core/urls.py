"""Connection URLs that more than one part reads: the settings check them at start, the
services connect with them, and the simulator publishes with them."""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import aiomqtt

from energy_tracker.core.errors import UnsupportedUrl

SESSION_EXPIRY_S = 86_400
"""How long the broker keeps an ingester's session (and its messages) while it is away."""

SMTP_SUPPORTED = "smtp://[user:password@]host[:port][?from=address] or smtps://…"


@dataclass(frozen=True)
class SmtpServer:
    """Where e-mail goes, parsed from ET_SMTP_URL."""

    host: str
    port: int
    use_tls: bool
    start_tls: bool | None  # None: STARTTLS when the server offers it
    username: str | None
    password: str | None
    sender: str

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        """Parse ET_SMTP_URL; UnsupportedUrl naming the variable when it is not one."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise UnsupportedUrl("ET_SMTP_URL", url, SMTP_SUPPORTED) from None
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise UnsupportedUrl("ET_SMTP_URL", url, SMTP_SUPPORTED)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=port or (465 if tls else 25),
            use_tls=tls,
            start_tls=False if tls or query.get("starttls") == "0" else None,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            sender=query.get("from") or f"energy-tracker@{parts.hostname}",
        )


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """What ET_MQTT_URL says:
    mqtt[s]://[user:password@]host[:port][?shared=group&client_id=id&session_expiry=seconds]."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool
    shared_group: str | None
    client_id: str | None = None
    session_expiry_s: int = SESSION_EXPIRY_S

    @classmethod
    def from_url(cls, url: str) -> BrokerSettings:
        """Parse ET_MQTT_URL; UnsupportedUrl naming the variable when it is not one."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise UnsupportedUrl("ET_MQTT_URL", url, "mqtt://host:1883 or mqtts://host:8883")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise UnsupportedUrl("ET_MQTT_URL", url, "a numeric port") from None
        query = parse_qs(parts.query)
        expiry = query.get("session_expiry", [str(SESSION_EXPIRY_S)])[0]
        if not expiry.isdigit():
            raise UnsupportedUrl("ET_MQTT_URL", url, "session_expiry in whole seconds")
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            shared_group=query.get("shared", [None])[0],
            client_id=query.get("client_id", [None])[0],
            session_expiry_s=int(expiry),
        )

    def client(self) -> aiomqtt.Client:
        """A publishing client for this broker under a throwaway id, not yet connected (enter it
        to connect). The MQTT ingester receives with its own (services/ingestion/mqtt.py)."""
        # A throwaway id: two processes with one id would keep disconnecting each other.
        identifier = f"energy-tracker-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=identifier,
            username=self.username,
            password=self.password,
            keepalive=30,
            timeout=5.0,
            tls_context=ssl.create_default_context() if self.tls else None,
        )

    def session_id(self, place: str) -> str:
        """`client_id` from the URL, else one stable for this host and `place` (the data
        directory), so the same installation resumes its session after a restart."""
        if self.client_id:
            return self.client_id
        digest = hashlib.sha256(f"{place}|{self.shared_group}".encode()).hexdigest()[:12]
        return f"energy-tracker-{socket.gethostname()}-{digest}"
