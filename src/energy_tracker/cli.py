"""The `energy-tracker` command: up, serve NAME, consume NAME, migrate, import FILE.csv --device ID,
create-admin EMAIL, simulate, evaluate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from energy_tracker.config import SERVICE_NAMES, Settings
from energy_tracker.core.errors import BackendUnavailable, UnsupportedUrl, redact_url
from energy_tracker.core.http import JsonFormatter, RequestIdFilter

log = logging.getLogger("energy_tracker")
_M_ARENA_MAX = -8  # glibc's mallopt parameter


def _configure_logging(level: str, json_lines: bool) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Schema upgrades are reported by `migrate` itself; Alembic's step-by-step lines are noise.
    logging.getLogger("alembic").setLevel(logging.WARNING)


async def _serve(
    settings: Settings,
    services: list[str],
    *,
    gateway: bool,
    banner: str,
    elsewhere: tuple[str, ...] = (),
) -> None:
    import uvicorn

    from energy_tracker.app import create_app, start_runtime

    runtime = await start_runtime(settings, services, gateway=gateway)
    app = create_app(settings, services, gateway=gateway, runtime=runtime, elsewhere=elsewhere)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        # Live streams (SSE) never end by themselves: give open ones 5 s, then close them.
        timeout_graceful_shutdown=5,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.state.shutting_down.set()  # streams end now, not after the graceful timeout
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM:
                # A stop asked for (`docker stop`) and done gracefully is a success: exit 0
                # rather than have uvicorn raise SIGTERM again once it has finished.
                self._captured_signals.remove(sig)

    server = Server(config)
    _collect_less()
    print(banner, flush=True)
    await server.serve()


def _fewer_malloc_arenas() -> None:
    """At most two malloc arenas (glibc's M_ARENA_MAX), before any thread starts.

    glibc gives each thread that allocates its own arena, up to 8 per core, and an arena
    keeps the memory it once held. The bus, the stores and the metadata database each run on
    threads of their own and build megabyte-sized batches there, so RSS grew with every thread
    that ever held a large batch; for a long-running box, two arenas are the usual fix.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 2)


def _collect_less() -> None:
    # Readings arrive by the thousand per request and each becomes several short-lived objects
    # (a dict, a model, a dataclass): at the default threshold of 700 allocations the collector
    # ran every ~100 readings, and the pipeline went ~1.4x faster without it (benchmarks/run.py).
    gc.set_threshold(50_000)


async def _consume(settings: Settings, service: str, metrics_port: int | None) -> None:
    """A service's background work (its consumers and periodic tasks) without HTTP, until
    SIGTERM or SIGINT; its metrics on 127.0.0.1:`metrics_port` for the parent to merge."""
    from prometheus_client import start_http_server

    from energy_tracker.app import create_app, start_runtime

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime = await start_runtime(settings, [service])
    app = create_app(settings, [service], gateway=False, runtime=runtime)
    if metrics_port:
        server, _ = start_http_server(metrics_port, addr="127.0.0.1")
    _collect_less()
    try:
        async with app.router.lifespan_context(app):
            await stop.wait()
    finally:
        if metrics_port:
            server.shutdown()


def cmd_up(settings: Settings) -> None:
    from energy_tracker.app import migrate

    _fewer_malloc_arenas()
    asyncio.run(migrate(settings))
    url = f"http://{settings.http_host}:{settings.http_port}"
    banner = (
        f"Home Energy Tracker: every service, the usage consumer in a second process\n"
        f"  API     {url}/api/v1   (docs at {url}/docs)\n"
        f"  data in {settings.data_dir.resolve()}\n"
        f"  bus     {redact_url(settings.effective_bus_url)}\n"
        f"Ctrl-C stops it."
    )
    # The usage consumer, the busiest, runs in a second process (background.py): both cores.
    asyncio.run(
        _serve(settings, list(SERVICE_NAMES), gateway=True, banner=banner, elsewhere=("usage",))
    )


def cmd_consume(settings: Settings, name: str, metrics_port: int | None) -> None:
    from energy_tracker.app import ROUTERS

    if name not in ROUTERS:
        raise SystemExit(f"energy-tracker: the {name} service is not built yet")
    _fewer_malloc_arenas()
    asyncio.run(_consume(settings, name, metrics_port))


def cmd_serve(settings: Settings, name: str) -> None:
    from energy_tracker.app import ROUTERS

    if name != "gateway" and name not in ROUTERS:
        raise SystemExit(f"energy-tracker: the {name} service is not built yet")
    url = f"http://{settings.http_host}:{settings.http_port}"
    services = [] if name == "gateway" else [name]
    asyncio.run(
        _serve(
            settings,
            services,
            gateway=name == "gateway",
            banner=f"energy-tracker {name} listening on {url}",
        )
    )


def cmd_migrate(settings: Settings) -> None:
    from energy_tracker.app import migrate

    asyncio.run(migrate(settings))
    print(
        f"schemas up to date: {redact_url(settings.effective_db_url)}, "
        f"{redact_url(settings.effective_tsdb_url)}"
    )


def cmd_create_admin(settings: Settings, email: str, password_stdin: bool) -> None:
    """Make EMAIL an admin; the account is created if missing, with a password from standard
    input (--password-stdin), ET_ADMIN_PASSWORD or, on a terminal, a prompt."""
    from energy_tracker.app import create_admin

    def password() -> str:
        if password_stdin:
            return sys.stdin.readline().rstrip("\r\n")
        if settings.admin_password is not None:
            return settings.admin_password.get_secret_value()
        if sys.stdin.isatty():
            import getpass

            first = getpass.getpass(f"password for {email}: ")
            if getpass.getpass("the same again: ") != first:
                raise ValueError("the two passwords differ")
            return first
        raise ValueError(
            "the account must be created and has no password: pass --password-stdin, "
            "set ET_ADMIN_PASSWORD or run the command on a terminal"
        )

    try:
        print(asyncio.run(create_admin(settings, email, password)))
    except ValueError as exc:
        raise SystemExit(f"energy-tracker: create-admin: {exc}") from None


def cmd_import(settings: Settings, path: Path, device_id: str, batch: int, skip_bad: bool) -> None:
    """Backfill a device from a CSV file straight onto the bus (services/ingestion/csv_import)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskID,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from energy_tracker.app import migrate, start_runtime, stop_runtime
    from energy_tracker.services.devices.store import DeviceStore
    from energy_tracker.services.ingestion.csv_import import CsvError, CsvImport, ImportReport
    from energy_tracker.services.ingestion.recorder import PublishFailed, ReadingRecorder

    if not path.is_file():
        raise SystemExit(f"energy-tracker: {path} is not a file")
    console = Console(stderr=True)
    size = path.stat().st_size

    async def run() -> ImportReport:
        await migrate(settings)
        # The import publishes to the bus; it does not subscribe to MQTT.
        rt = await start_runtime(settings.model_copy(update={"mqtt_url": None}), ["ingestion"])
        try:
            assert rt.bus is not None
            recorder = ReadingRecorder(rt.bus, DeviceStore(rt.db), settings.retention_days)
            job = CsvImport(recorder, path, device_id, batch)
            with Progress(
                TextColumn("{task.description:>9}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rows]:>12,} rows"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
            ) as bar:
                tasks: dict[str, TaskID] = {}

                def progress(phase: str, read: int, rows: int) -> None:
                    if phase not in tasks:
                        tasks[phase] = bar.add_task(phase, total=size, rows=0)
                    bar.update(tasks[phase], completed=read, rows=rows)

                return await job.run(skip_bad=skip_bad, progress=progress)
        finally:
            await stop_runtime(rt)

    try:
        report = asyncio.run(run())
    except CsvError as exc:
        raise SystemExit(f"energy-tracker: {exc}") from None
    except PublishFailed as exc:
        raise SystemExit(f"energy-tracker: the event bus refused the readings: {exc}") from None
    if report.ignored_columns:
        console.print(f"ignored columns: {', '.join(report.ignored_columns)}")
    for line, reason in report.bad:
        console.print(f"{path}:{line}: {reason}", markup=False, highlight=False)
    if report.bad_count > len(report.bad):
        console.print(f"... and {report.bad_count - len(report.bad)} more bad line(s)")
    rate = report.rows / report.seconds if report.seconds else 0.0
    if report.bad_count and not skip_bad:
        raise SystemExit(
            f"energy-tracker: {report.bad_count} bad line(s) in {report.rows} rows; nothing "
            f"imported (fix them, or pass --skip-bad to import the good rows)"
        )
    print(
        f"imported {report.imported} reading(s) of {report.rows} rows into device {device_id} "
        f"in {report.seconds:.1f} s ({rate:,.0f} rows/s); {report.bad_count} bad line(s) skipped"
    )


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> None:
    """Simulated homes against a running gateway (energy_tracker.simulator)."""
    import aiomqtt
    import httpx

    from energy_tracker.simulator.console import parse_duration_s, run
    from energy_tracker.simulator.driver import Plan, SimulatorError

    try:
        interval_s = parse_duration_s(args.interval)
        duration_s = None if args.duration is None else parse_duration_s(args.duration)
        if interval_s < 0.001:
            raise ValueError("the interval must be at least 1ms")
    except ValueError as exc:
        raise SystemExit(f"energy-tracker: simulate: {exc}") from None
    plan = Plan(
        homes=args.homes,
        seed=args.seed,
        interval_ms=round(interval_s * 1000),
        backfill_days=args.days if args.backfill else None,
        duration_s=duration_s,
        rate=args.rate,
        batch=args.batch,
        concurrency=args.concurrency,
    )
    url = args.url or f"http://{settings.http_host}:{settings.http_port}"
    mqtt_url = (settings.mqtt_url or "mqtt://127.0.0.1:1883") if args.mqtt else None
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request hides the bars
    try:
        run(plan, url, mqtt_url)
    except SimulatorError as exc:
        raise SystemExit(f"energy-tracker: simulate: {exc}") from None
    except httpx.HTTPError as exc:
        raise SystemExit(f"energy-tracker: simulate: gateway {url}: {exc}") from None
    except aiomqtt.MqttError as exc:
        raise SystemExit(f"energy-tracker: simulate: MQTT broker {mqtt_url}: {exc}") from None


def cmd_evaluate(files: list[Path], series: list[str] | None, half: str | None = None) -> None:
    """Backtest the insights on real homes and print the table (services/insights/evaluate.py)."""
    from energy_tracker.services.insights import evaluate

    results = []
    for path in files:
        if not path.exists():
            raise SystemExit(f"energy-tracker: evaluate: {path} is missing (run `make data`)")
        for data_set in evaluate.load_uci(path, series):
            if half:
                data_set = evaluate.half_of(data_set, half == "second")
            print(f"evaluating {data_set.name} ({data_set.kwh.size:,} hours) …", flush=True)
            results.append(evaluate.evaluate(data_set))
    print(evaluate.table(results))


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} is not above zero")
        return value

    return parse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="energy-tracker", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run every service on the embedded defaults (two processes)")
    serve = sub.add_parser("serve", help="run one service, wired by the ET_* URLs")
    serve.add_argument("name", choices=SERVICE_NAMES)
    consume = sub.add_parser(
        "consume", help="run one service's consumers and periodic tasks, without HTTP"
    )
    consume.add_argument("name", choices=[n for n in SERVICE_NAMES if n != "gateway"])
    consume.add_argument("--metrics-port", type=int, help="serve /metrics on 127.0.0.1:PORT")
    sub.add_parser("migrate", help="create or upgrade the database schemas")
    admin = sub.add_parser("create-admin", help="make EMAIL an admin, creating the account")
    admin.add_argument("email")
    admin.add_argument(
        "--password-stdin", action="store_true", help="read a new account's password from stdin"
    )
    imp = sub.add_parser("import", help="backfill a device's readings from a CSV file")
    imp.add_argument("file", type=Path, help="CSV with a header: ts,power_w[,energy_wh,...]")
    imp.add_argument("--device", required=True, help="the device id the readings belong to")
    imp.add_argument("--batch", type=int, default=10_000, help="readings per bus message")
    imp.add_argument(
        "--skip-bad", action="store_true", help="import the good rows even if some are bad"
    )
    sim = sub.add_parser("simulate", help="simulated homes sending readings to a running gateway")
    sim.add_argument("--homes", type=_positive(int), default=10, help="how many homes")
    sim.add_argument("--interval", default="10s", help="between two readings of a device")
    sim.add_argument("--backfill", action="store_true", help="first send the last --days days")
    sim.add_argument("--days", type=_positive(float), default=7.0, help="history to backfill")
    sim.add_argument(
        "--duration",
        help="how long to run live (e.g. 10m; 0: stop after the backfill); "
        "default: until interrupted",
    )
    sim.add_argument("--rate", type=_positive(float), help="readings a second at most")
    sim.add_argument("--seed", type=int, default=1, help="the same seed, the same homes")
    sim.add_argument("--mqtt", action="store_true", help="publish to ET_MQTT_URL, not HTTP")
    sim.add_argument("--url", help="the gateway (default: http://ET_HTTP_HOST:ET_HTTP_PORT)")
    sim.add_argument("--batch", type=_positive(int), default=5000, help="readings a POST")
    sim.add_argument("--concurrency", type=_positive(int), default=4, help="requests at once")
    ev = sub.add_parser("evaluate", help="backtest forecasts and projections on real homes")
    ev.add_argument(
        "files",
        type=Path,
        nargs="*",
        default=[Path(".cache/data/minute_household_power.csv.xz")],
        help="UCI household minute files (default: the one `make data` fetches)",
    )
    ev.add_argument(
        "--series",
        action="append",
        help="only these series (uci-home, uci-kitchen, uci-laundry, uci-water-heater-ac)",
    )
    ev.add_argument(
        "--half",
        choices=["first", "second"],
        help="judge only the first or the second half of each series (the anomaly thresholds "
        "were chosen on the first)",
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings()
        _configure_logging(args.log_level.upper(), settings.log_format == "json")
        if args.command == "up":
            cmd_up(settings)
        elif args.command == "serve":
            cmd_serve(settings, args.name)
        elif args.command == "consume":
            cmd_consume(settings, args.name, args.metrics_port)
        elif args.command == "import":
            cmd_import(settings, args.file, args.device, args.batch, args.skip_bad)
        elif args.command == "create-admin":
            cmd_create_admin(settings, args.email, args.password_stdin)
        elif args.command == "simulate":
            cmd_simulate(settings, args)
        elif args.command == "evaluate":
            cmd_evaluate(args.files, args.series, args.half)
        else:
            cmd_migrate(settings)
    except (BackendUnavailable, UnsupportedUrl) as exc:
        print(f"energy-tracker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ValidationError as exc:
        problems = "; ".join(
            f"ET_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        print(f"energy-tracker: bad configuration: {problems}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
