"""The composition root: settings in, adapters wired, one FastAPI app per process out.

`up` builds every service into one app on the embedded defaults; `serve NAME` builds one
service (or the gateway, which then forwards to the others over HTTP). Nothing connects to a
backend at import time; everything starts in the app's lifespan and stops with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI

from energy_tracker import __version__
from energy_tracker.background import ChildProcess, merged_metrics
from energy_tracker.config import SERVICE_NAMES, Settings
from energy_tracker.core.auth import AccessGrant
from energy_tracker.core.bus.base import EventBus
from energy_tracker.core.bus.factory import bus_from_url
from energy_tracker.core.bus.runner import ConsumeLoop, dlq_topic
from energy_tracker.core.credentials import TOKEN_USE_RESOLUTION_S, CredentialCache
from energy_tracker.core.directory import DirectoryCache
from energy_tracker.core.events import ALERT_EVENTS, TOPICS
from energy_tracker.core.http import (
    Authenticator,
    RequestIdMiddleware,
    document_errors,
    install_error_handlers,
    install_health,
)
from energy_tracker.core.inputs import BodyGuard
from energy_tracker.core.stores.credential_changes import CredentialChanges
from energy_tracker.core.stores.metadata import Database
from energy_tracker.core.stores.timeseries.base import SeriesStore
from energy_tracker.core.stores.timeseries.factory import series_store_from_url
from energy_tracker.core.urls import SmtpServer
from energy_tracker.services.alerts import api as alerts_api
from energy_tracker.services.alerts.service import AlertService
from energy_tracker.services.alerts.store import AlertStore
from energy_tracker.services.devices import api as devices_api
from energy_tracker.services.devices.store import DeviceStore
from energy_tracker.services.gateway.dashboard import install_dashboard
from energy_tracker.services.gateway.middleware import install_gateway_middleware
from energy_tracker.services.gateway.proxy import ProxyClients, install_proxy
from energy_tracker.services.gateway.ratelimit import RateLimiter, rate_limiter_for
from energy_tracker.services.gateway.routes import API_PREFIX
from energy_tracker.services.ingestion import api as ingestion_api
from energy_tracker.services.ingestion import mqtt
from energy_tracker.services.ingestion.recorder import ReadingRecorder
from energy_tracker.services.insights import api as insights_api
from energy_tracker.services.insights import reports
from energy_tracker.services.insights.consumer import InsightsConsumer
from energy_tracker.services.insights.narrative import Narrator
from energy_tracker.services.insights.store import HourCache
from energy_tracker.services.usage import api as usage_api
from energy_tracker.services.usage.consumer import UsageConsumer
from energy_tracker.services.usage.live import StoredReadings
from energy_tracker.services.usage.retention import RetentionTask
from energy_tracker.services.users import api as users_api
from energy_tracker.services.users.admins import ensure_admin
from energy_tracker.services.users.household_store import HouseholdStore
from energy_tracker.services.users.pruning import RefreshTokenPruner
from energy_tracker.services.users.store import UserStore

log = logging.getLogger(__name__)

# A store slower than this to answer `SELECT 1` counts as down for /readyz.
READY_TIMEOUT_S = 2.0
ALL_TOPICS = [*TOPICS, *(dlq_topic(t) for t in TOPICS)]
# What no service consumes: kept only so far back (ET_BUS_UNREAD_KEEP) on the embedded bus.
UNREAD_TOPICS = [ALERT_EVENTS, *(dlq_topic(t) for t in TOPICS)]


class Directory:
    """Identity look-ups for authentication, backed by the user, household and device stores."""

    def __init__(
        self,
        users: UserStore,
        households: HouseholdStore,
        devices: DeviceStore,
        changes: CredentialChanges,
    ) -> None:
        self.users = users
        self.households = households
        self.devices = devices
        self.changes = changes

    async def memberships(self, user_id: str) -> tuple[tuple[str, str], ...]:
        return await self.households.memberships(user_id)

    async def user_role(self, user_id: str) -> str | None:
        user = await self.users.get(user_id)
        return user.role if user is not None and not user.disabled else None

    async def devices_for_key_digests(
        self, digests: Collection[str]
    ) -> dict[str, tuple[str, str] | None]:
        found = await self.devices.contexts_by_key_hash(digests)
        return {
            d: (ctx.device_id, ctx.owner_id) if (ctx := found.get(d)) and ctx.enabled else None
            for d in digests
        }

    async def access_grant(self, token_id: str) -> AccessGrant | None:
        return await self.users.access_grant(token_id)

    async def token_used(self, token_id: str, at: datetime) -> None:
        await self.users.access_token_used(token_id, at, timedelta(seconds=TOKEN_USE_RESOLUTION_S))

    async def credentials_version(self) -> int:
        return await self.changes.version()

    async def credentials_changed(self) -> int:
        return await self.changes.bump()


class Worker(Protocol):
    """A background loop of a service: consumers, the MQTT subscriber, retention. One that has
    a `ready` flag (a consumer between losing its bus and rejoining) says when it is down
    though still running."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Runtime:
    """The started backends of one process."""

    settings: Settings
    db: Database
    bus: EventBus | None = None
    series: SeriesStore | None = None
    limiter: RateLimiter | None = None
    loops: list[Worker] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    elsewhere: frozenset[str] = frozenset()
    """Services whose background work (consumers, periodic tasks) runs in a child process
    (`background.py`): here they only serve their routes."""
    children: list[ChildProcess] = field(default_factory=list)


def open_bus(settings: Settings) -> EventBus:
    """The (unstarted) bus of ET_BUS_URL, with the retention of the topics no service reads."""
    return bus_from_url(
        settings.effective_bus_url,
        settings.bus_partitions,
        unread_topics=UNREAD_TOPICS,
        unread_keep=settings.bus_unread_keep,
    )


async def migrate(settings: Settings) -> None:
    """Create or upgrade the metadata and time-series schemas, and the topics."""
    db = Database(settings.effective_db_url)
    await db.start()
    try:
        await db.migrate()
    finally:
        await db.stop()
    series = series_store_from_url(settings.effective_tsdb_url)
    await series.start()
    try:
        await series.migrate()
    finally:
        await series.stop()
    bus = open_bus(settings)
    await bus.start()
    try:
        await bus.ensure_topics(ALL_TOPICS)
    finally:
        await bus.stop()


async def create_admin(settings: Settings, email: str, password: Callable[[], str]) -> str:
    """`energy-tracker create-admin`: make EMAIL an admin in the (migrated) metadata database."""
    db = Database(settings.effective_db_url)
    await db.start()
    try:
        await db.migrate()
        done = await ensure_admin(UserStore(db), email, password)
        # A running process may have cached the account's former role.
        await CredentialChanges(db).bump()
        return done
    finally:
        await db.stop()


async def start_runtime(
    settings: Settings, services: Iterable[str], *, gateway: bool = False
) -> Runtime:
    """Start what `services` (and the gateway, if `gateway`) need; a backend that cannot be
    reached raises BackendUnavailable."""
    wanted = set(services)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    rt = Runtime(settings, Database(settings.effective_db_url))
    try:
        await rt.db.start()
        if gateway and settings.rate_limits is not None:
            rt.limiter = rate_limiter_for(settings.redis_url, settings.redis_prefix)
            await rt.limiter.start()
        if any(SERVICES[s].needs_series for s in wanted if s in SERVICES):
            rt.series = series_store_from_url(settings.effective_tsdb_url)
            await rt.series.start()
        if any(SERVICES[s].needs_bus for s in wanted if s in SERVICES):
            rt.bus = open_bus(settings)
            await rt.bus.start()
            await rt.bus.ensure_topics(ALL_TOPICS)
        if "ingestion" in wanted and settings.mqtt_url:
            await mqtt.probe(settings.mqtt_url)
    except BaseException:
        await stop_runtime(rt)
        raise
    return rt


async def stop_runtime(rt: Runtime) -> None:
    for loop in rt.loops:
        loop.stop()
    if rt.tasks:
        await asyncio.gather(*rt.tasks, return_exceptions=True)
    for closer in (rt.bus, rt.series, rt.limiter, rt.db):
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer.stop()


def _run_loop(rt: Runtime, loop: ConsumeLoop) -> None:
    _run_worker(rt, f"{loop.group}:{loop.topic}", loop)


def _run_worker(rt: Runtime, name: str, worker: Worker) -> None:
    """Run a background worker until the runtime stops it; a crash is logged, not raised."""

    async def guarded() -> None:
        try:
            await worker.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s stopped", name)

    rt.loops.append(worker)
    rt.tasks.append(asyncio.create_task(guarded(), name=name))


@dataclass(frozen=True)
class Shared:
    """What every service built into one process shares: the metadata stores over one database.

    The devices store is the device directory the other services see (`core.directory`)."""

    users: UserStore
    households: HouseholdStore
    devices: DeviceStore


def _wire_shared(app: FastAPI, settings: Settings, rt: Runtime) -> Shared:
    """Settings, the metadata stores and authentication, which every service's routes use."""
    shared = Shared(UserStore(rt.db), HouseholdStore(rt.db), DeviceStore(rt.db))
    app.state.settings = settings
    app.state.secret = settings.secret()
    app.state.users, app.state.devices = shared.users, shared.devices
    app.state.households = shared.households
    app.state.directory = shared.devices
    app.state.read_directory = DirectoryCache(shared.devices)
    app.state.series = rt.series
    app.state.limiter = rt.limiter
    app.state.credentials = CredentialCache(
        Directory(shared.users, shared.households, shared.devices, CredentialChanges(rt.db))
    )
    app.state.authenticator = Authenticator(
        app.state.credentials, app.state.secret, settings.jwt_issuer
    )
    return shared


def _wire_users(app: FastAPI, settings: Settings, rt: Runtime, shared: Shared) -> None:
    """The pruning of expired refresh tokens."""
    pruner = RefreshTokenPruner(shared.users, settings.refresh_token_keep_days)
    _run_worker(rt, "users:pruning", pruner)


def _wire_ingestion(app: FastAPI, settings: Settings, rt: Runtime, shared: Shared) -> None:
    """The reading recorder behind POST /readings, and the MQTT subscriber when configured."""
    if rt.bus is None:
        return
    app.state.recorder = ReadingRecorder(rt.bus, shared.devices, settings.retention_days)
    if settings.mqtt_url:
        ingester = mqtt.MqttIngester(
            settings.mqtt_url,
            app.state.recorder,
            shared.devices,
            place=str(settings.data_dir.resolve()),
            changes=CredentialChanges(rt.db).version,
        )
        _run_worker(rt, "ingestion:mqtt", ingester)


def _wire_usage(app: FastAPI, settings: Settings, rt: Runtime, shared: Shared) -> None:
    """The usage consumer, the live-readings fan-out its SSE route reads, and retention."""
    if rt.bus is None or rt.series is None:
        return
    app.state.stored_readings = StoredReadings()
    if "usage" in rt.elsewhere:
        return  # the consumer and retention run in the child; live streams poll the store
    consumer = UsageConsumer(
        rt.bus, rt.series, shared.devices, settings.max_gap_s * 1000, app.state.stored_readings
    )
    _run_loop(rt, consumer.loop())
    _run_worker(rt, "usage:retention", RetentionTask(rt.series, settings.retention_days))


def _wire_alerts(app: FastAPI, settings: Settings, rt: Runtime, shared: Shared) -> None:
    """The alert evaluator's consume loops, its periodic check and the notification dispatcher."""
    if rt.bus is None:
        return
    app.state.alerts = AlertService(
        rt.bus,
        AlertStore(rt.db),
        shared.devices,
        max_gap_ms=settings.max_gap_s * 1000,
        smtp=SmtpServer.from_url(settings.smtp_url) if settings.smtp_url else None,
        deny_private=settings.webhook_deny_private,
        history_days=settings.alert_history_days,
        series=rt.series,
    )
    for loop in app.state.alerts.loops():
        _run_loop(rt, loop)
    for worker_name, worker in app.state.alerts.workers().items():
        _run_worker(rt, worker_name, worker)


def _wire_insights(app: FastAPI, settings: Settings, rt: Runtime, shared: Shared) -> None:
    """The hours the forecasts and anomaly reports read, kept up to date by the insights
    consumer; the summary's narrator, only with ET_LLM_URL: without it nothing leaves the
    machine."""
    if rt.bus is not None and rt.series is not None:
        app.state.hour_cache = HourCache(rt.series, reports.CACHED_HOURS)
        _run_loop(rt, InsightsConsumer(rt.bus, app.state.hour_cache).loop())
    if settings.llm_url:
        app.state.narrator = Narrator(settings.llm_url, settings.llm_model, settings.llm_timeout_s)


Builder = Callable[[FastAPI, Settings, Runtime, Shared], None]


@dataclass(frozen=True)
class ServiceBuild:
    """How the root builds one service: its routes, the backends it needs, and what it starts
    beyond the shared wiring (devices starts nothing)."""

    router: APIRouter
    needs_bus: bool = False
    needs_series: bool = False
    wire: Builder | None = None


SERVICES: dict[str, ServiceBuild] = {
    "users": ServiceBuild(users_api.router, wire=_wire_users),
    "devices": ServiceBuild(devices_api.router),
    "ingestion": ServiceBuild(ingestion_api.router, needs_bus=True, wire=_wire_ingestion),
    "usage": ServiceBuild(usage_api.router, needs_bus=True, needs_series=True, wire=_wire_usage),
    # alerts reads the series store for rule previews (POST /alert-rules/preview)
    "alerts": ServiceBuild(alerts_api.router, needs_bus=True, needs_series=True, wire=_wire_alerts),
    "insights": ServiceBuild(
        insights_api.router, needs_bus=True, needs_series=True, wire=_wire_insights
    ),
}
ROUTERS: dict[str, APIRouter] = {name: build.router for name, build in SERVICES.items()}


def _lifespan(
    settings: Settings,
    local: list[str],
    gateway: bool,
    runtime: Runtime | None,
    elsewhere: frozenset[str],
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """Start the runtime (unless given one), wire the local services onto it, start the child
    processes of the services whose background work runs `elsewhere`, and on the way out
    close the gateway's proxy client and stop the runtime (children too), whatever failed in
    between."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or await start_runtime(settings, local, gateway=gateway)
        rt.elsewhere = elsewhere
        app.state.runtime = rt
        try:
            shared = _wire_shared(app, settings, rt)
            for service in local:
                wire = SERVICES[service].wire if service in SERVICES else None
                if wire is not None:
                    wire(app, settings, rt, shared)
            level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
            for service in sorted(elsewhere):
                child = ChildProcess(service, level)
                rt.children.append(child)
                _run_worker(rt, f"{service}:process", child)
            yield
        finally:
            proxy_client: ProxyClients | None = app.state.proxy_client
            if proxy_client is not None:
                await proxy_client.aclose()
            await stop_runtime(rt)

    return lifespan


def _remote_services(settings: Settings, local: list[str]) -> dict[str, str]:
    """The services a gateway forwards to: those not served here that have ET_<NAME>_URL."""
    return {
        s: url
        for s in SERVICE_NAMES
        if s not in local and s != "gateway" and (url := settings.service_url(s))
    }


def create_app(
    settings: Settings,
    services: Iterable[str],
    *,
    gateway: bool,
    runtime: Runtime | None = None,
    elsewhere: Iterable[str] = (),
) -> FastAPI:
    """An app serving `services` in-process; with `gateway`, also the public entry point, which
    forwards to ET_<SERVICE>_URL every service not served here. A `runtime` already started
    (so that start-up failures surface before the server runs) is used and then stopped. The
    background work of the services in `elsewhere` runs in child processes this app starts
    (`energy-tracker consume NAME`), which share its bus and stores."""
    local = [s for s in services if s in SERVICE_NAMES and s != "gateway"]
    app = FastAPI(
        title="Home Energy Tracker",
        version=__version__,
        lifespan=_lifespan(settings, local, gateway, runtime, frozenset(elsewhere)),
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.shutting_down = asyncio.Event()
    if gateway:
        install_gateway_middleware(app, settings)
    app.add_middleware(BodyGuard)
    app.add_middleware(RequestIdMiddleware, service="gateway" if gateway else "+".join(local))
    install_error_handlers(app)
    install_health(app, _readiness(app), _metrics(app))
    for service in sorted(local, key=_match_order):
        if service in ROUTERS:
            app.include_router(ROUTERS[service], prefix=API_PREFIX)
    remote = _remote_services(settings, local) if gateway else {}
    app.state.proxy_client = install_proxy(app, remote) if remote else None
    if gateway:
        install_dashboard(app)
    documented = list(ROUTERS) if gateway else [s for s in local if s in ROUTERS]
    app.openapi = lambda: _api_schema(app, documented)  # type: ignore[method-assign]
    return app


MATCHED_FIRST = ("ingestion", "devices")
"""Services whose routes a request is matched against first. Starlette tries each included
router in turn, and FastAPI's costs tens of microseconds even when none of its routes match
(measured: POST /readings matched in 168 µs behind the users and devices routers, 33 µs
first), so the live workload's one-reading POST comes first, then a device's GET. No two
services share a path, so the order changes nothing else."""


def _match_order(service: str) -> int:
    return MATCHED_FIRST.index(service) if service in MATCHED_FIRST else len(MATCHED_FIRST)


def _readiness(app: FastAPI) -> Callable[[], Awaitable[list[str]]]:
    """What /readyz reports as keeping this process from serving: a store that does not answer,
    a background worker that stopped (or is not connected), for a gateway a service it forwards
    to that does not answer."""

    async def failing() -> list[str]:
        rt: Runtime | None = getattr(app.state, "runtime", None)
        if rt is None:
            return ["starting"]
        down = [
            task.get_name()
            for task, worker in zip(rt.tasks, rt.loops, strict=True)
            if task.done() or not getattr(worker, "ready", True)
        ]
        stores = {"metadata database": rt.db, "series store": rt.series}
        for what, store in stores.items():
            if store is None:
                continue
            try:
                async with asyncio.timeout(READY_TIMEOUT_S):
                    await store.ping()
            except Exception as exc:  # whatever the driver raises: not ready, and why
                down.append(f"{what}: {type(exc).__name__}")
        proxy: ProxyClients | None = getattr(app.state, "proxy_client", None)
        if proxy is not None:  # a gateway: the services it forwards to
            down += await proxy.unreachable()
        return down

    return failing


def _metrics(app: FastAPI) -> Callable[[], Awaitable[bytes]]:
    """This process's metrics, with those of its child processes merged in."""

    async def text() -> bytes:
        rt: Runtime | None = getattr(app.state, "runtime", None)
        children = rt.children if rt is not None else []
        return merged_metrics(await asyncio.gather(*(c.metrics() for c in children)))

    return text


def _api_schema(app: FastAPI, services: list[str]) -> dict:
    """The OpenAPI document: a gateway describes every service's routes, wherever they run;
    bodies parsed by hand (readings, for speed) are added from their models."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi
        from pydantic import TypeAdapter
        from pydantic.json_schema import JsonSchemaMode

        documented = APIRouter()
        for service in services:
            documented.include_router(ROUTERS[service], prefix=API_PREFIX)
        schema = get_openapi(title=app.title, version=app.version, routes=documented.routes)
        document_errors(schema, [r for s in services for r in ROUTERS[s].routes], API_PREFIX)
        bodies: list[tuple[str, JsonSchemaMode, TypeAdapter[Any]]] = [
            (name, "validation", body) for name, body in ingestion_api.HAND_PARSED_BODIES.items()
        ]
        _, defs = TypeAdapter.json_schemas(
            bodies,
            ref_template="#/components/schemas/{model}",
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
        app.openapi_schema = schema
    return app.openapi_schema
