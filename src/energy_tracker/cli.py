"""The `energy-tracker` command: up, serve NAME, migrate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from pydantic import ValidationError

from energy_tracker.config import SERVICE_NAMES, Settings
from energy_tracker.core.errors import BackendUnavailable, UnsupportedUrl, redact_url
from energy_tracker.core.http import RequestIdFilter

log = logging.getLogger("energy_tracker")


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Schema upgrades are reported by `migrate` itself; Alembic's step-by-step lines are noise.
    logging.getLogger("alembic").setLevel(logging.WARNING)


async def _serve(settings: Settings, services: list[str], *, gateway: bool, banner: str) -> None:
    import uvicorn

    from energy_tracker.app import create_app, start_runtime

    # A broker that cannot be reached is reported once, by us, in one line; the client's own
    # connection errors would only repeat it with less context.
    kafka_log = logging.getLogger("aiokafka")
    kafka_log.disabled = True
    try:
        runtime = await start_runtime(settings, services)
    finally:
        kafka_log.disabled = False
    app = create_app(settings, services, gateway=gateway, runtime=runtime)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    print(banner, flush=True)
    await server.serve()


def cmd_up(settings: Settings) -> None:
    from energy_tracker.app import migrate

    asyncio.run(migrate(settings))
    url = f"http://{settings.http_host}:{settings.http_port}"
    banner = (
        f"Home Energy Tracker: every service in one process\n"
        f"  API     {url}/api/v1   (docs at {url}/docs)\n"
        f"  data in {settings.data_dir.resolve()}\n"
        f"  bus     {redact_url(settings.effective_bus_url)}\n"
        f"Ctrl-C stops it."
    )
    asyncio.run(_serve(settings, list(SERVICE_NAMES), gateway=True, banner=banner))


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="energy-tracker", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run every service in one process on the embedded defaults")
    serve = sub.add_parser("serve", help="run one service, wired by the ET_* URLs")
    serve.add_argument("name", choices=SERVICE_NAMES)
    sub.add_parser("migrate", help="create or upgrade the database schemas")
    args = parser.parse_args(argv)
    _configure_logging(args.log_level.upper())
    try:
        settings = Settings()
        if args.command == "up":
            cmd_up(settings)
        elif args.command == "serve":
            cmd_serve(settings, args.name)
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
