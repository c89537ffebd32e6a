"""Connection URLs that more than one part reads: the settings check them at start, the
services connect with them, and the simulator publishes with them."""

from __future__ import annotations

import os
import secrets
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import aiomqtt

from energy_tracker.core.errors import UnsupportedUrl

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
    """What ET_MQTT_URL says: mqtt[s]://[user:password@]host[:port][?shared=group]."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool
    shared_group: str | None

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
        shared = parse_qs(parts.query).get("shared", [None])[0]
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            shared_group=shared,
        )

    def client(self) -> aiomqtt.Client:
        """A client for this broker, not yet connected (enter it to connect)."""
        # A unique client id: two processes with one id would keep disconnecting each other.
        identifier = f"energy-tracker-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            identifier=identifier,
            keepalive=30,
            timeout=5.0,
            tls_context=ssl.create_default_context() if self.tls else None,
        )
