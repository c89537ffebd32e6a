"""One typed settings object, read once from the ET_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from energy_tracker.core.bus.embedded import UNREAD_KEEP
from energy_tracker.core.rate_limits import (
    DEFAULT_RATE_LIMITS,
    RateLimits,
    parse_rate_limits,
)
from energy_tracker.core.urls import SmtpServer

MIN_SECRET_LENGTH = 32
SERVICE_NAMES = ("gateway", "users", "devices", "ingestion", "usage", "alerts", "insights")


class Settings(BaseSettings):
    """Every knob of a deployment; each backend is chosen by the scheme of its URL."""

    model_config = SettingsConfigDict(env_prefix="ET_", extra="ignore")

    data_dir: Path = Path(".energy-tracker")
    bus_url: str | None = None
    db_url: str | None = None
    tsdb_url: str | None = None
    redis_url: str | None = None
    mqtt_url: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # `json`: one JSON object a line with the request id, for a log collector (containers).
    log_format: Literal["text", "json"] = "text"

    # Where the gateway finds each service when they run as separate processes.
    users_url: str | None = None
    devices_url: str | None = None
    ingestion_url: str | None = None
    usage_url: str | None = None
    alerts_url: str | None = None
    insights_url: str | None = None

    # Secret that signs user access tokens; every service verifies tokens with it. HS256 with a
    # guessable secret is a forgeable token, so a short one (the README's old `change-me`) is
    # refused at start.
    jwt_secret: str | None = Field(default=None, min_length=MIN_SECRET_LENGTH)
    jwt_issuer: str = "energy-tracker"
    access_token_ttl_s: int = 900
    bus_partitions: int = Field(default=8, ge=1)
    max_gap_s: int = Field(default=900, ge=1)
    retention_days: int = Field(default=400, ge=1)
    # How long what only grows is kept (each pruned hourly, in batches): resolved alerts with
    # their transitions and notifications; refresh tokens past their expiry; the records of an
    # embedded-bus topic that no consumer group reads (the DLQs), per partition.
    alert_history_days: int = Field(default=90, ge=1)
    refresh_token_keep_days: int = Field(default=30, ge=0)
    bus_unread_keep: int = Field(default=UNREAD_KEEP, ge=1)

    # The gateway's limits per principal (see services/gateway/ratelimit.py); None: off.
    rate_limits: Annotated[RateLimits | None, NoDecode] = DEFAULT_RATE_LIMITS
    # Prefix of every key the gateway keeps in ET_REDIS_URL, so deployments can share a server.
    redis_prefix: str = Field(default="et:", max_length=64)
    # Browser origins allowed to call the API (comma-separated; `*` for any); none by default.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    # Password for `energy-tracker create-admin` when it must create the account.
    admin_password: SecretStr | None = None
    # Where alert e-mail goes: smtp://[user:password@]host[:port][?from=address]; unset: none.
    smtp_url: str | None = None
    # Refuse alert webhooks to loopback and private addresses too (link-local: always).
    webhook_deny_private: bool = False
    # An OpenAI-compatible chat-completions endpoint for the summary's narrative; unset: none,
    # and nothing leaves the machine. The model name it is asked for, and how long to wait.
    llm_url: str | None = None
    llm_model: str = "local"
    llm_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("smtp_url")
    @classmethod
    def _check_smtp_url(cls, value: str | None) -> str | None:
        if value:
            SmtpServer.from_url(value)  # UnsupportedUrl, naming the variable, when it is not
        return value

    @field_validator("rate_limits", mode="before")
    @classmethod
    def _parse_rate_limits(cls, value: Any) -> Any:
        return parse_rate_limits(value) if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(o.strip().rstrip("/") for o in value.split(",") if o.strip())
        return value

    @property
    def effective_bus_url(self) -> str:
        return self.bus_url or f"embedded:///{self.data_dir.resolve()}/bus.db"

    @property
    def effective_db_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir.resolve()}/meta.db"

    @property
    def effective_tsdb_url(self) -> str:
        return self.tsdb_url or f"sqlite:///{self.data_dir.resolve()}/series.db"

    def service_url(self, name: str) -> str | None:
        return getattr(self, f"{name}_url", None)

    def secret(self) -> str:
        """The token signing secret: configured, or generated once and kept in the data dir.

        The file is created readable by its owner only and whole: written under another name
        with mode 0600 from the start, then renamed into place, so no other user can read it
        and no concurrent start reads half of it (the first rename wins; the others read it).
        """
        if self.jwt_secret:
            return self.jwt_secret
        path = self.data_dir / "jwt-secret"
        if not path.exists():
            import os
            import secrets

            self.data_dir.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".jwt-secret.{os.getpid()}")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
            try:
                os.link(partial, path)  # fails if another process got there first
            except FileExistsError:
                pass
            finally:
                partial.unlink()
        return path.read_text().strip()
