"""No route runs a plain function per request: FastAPI runs a sync endpoint or dependency on a
worker thread, a thread hop for every request (profiled at ~15 % of the one-reading POST's time,
and worse on a loaded machine, where the thread waits to be scheduled). A dependency that only
reads `app.state` is `async def`, but for those kept plain as measured (`KEPT_PLAIN`)."""

from __future__ import annotations

import inspect

from energy_tracker.app import ROUTERS
from energy_tracker.core.http import _api_routes, _dependants

# Kept plain with the usage routes (fe70046): with these `async def`, a year by day took 4-5
# times as long at p50, back to back on the 10M store, cause not found (services/usage/api.py,
# `series`). Not on the live workload's path.
KEPT_PLAIN = {
    "energy_tracker.core.http.device_directory",
    "energy_tracker.core.http.read_directory",
    "energy_tracker.services.usage.api.series",
    "energy_tracker.services.usage.api.usage_query",
}


def test_every_endpoint_and_dependency_is_async() -> None:
    sync = {
        f"{d.call.__module__}.{d.call.__qualname__}"
        for router in ROUTERS.values()
        for route in _api_routes(router.routes)
        for d in _dependants(route.dependant)
        if d.call is not None and not inspect.iscoroutinefunction(d.call)
    }
    assert sync == KEPT_PLAIN, sync - KEPT_PLAIN
