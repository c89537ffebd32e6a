"""No route runs a plain function per request: FastAPI runs a sync endpoint or dependency on a
worker thread, a thread hop for every request (profiled at ~15 % of the one-reading POST's time,
and worse on a loaded machine, where the thread waits to be scheduled). A dependency that only
reads `app.state` is `async def`."""

from __future__ import annotations

import inspect

from energy_tracker.app import ROUTERS
from energy_tracker.core.http import _api_routes, _dependants


def test_every_endpoint_and_dependency_is_async() -> None:
    sync = {
        f"{d.call.__module__}.{d.call.__qualname__}"
        for router in ROUTERS.values()
        for route in _api_routes(router.routes)
        for d in _dependants(route.dependant)
        if d.call is not None and not inspect.iscoroutinefunction(d.call)
    }
    assert not sync, sync
