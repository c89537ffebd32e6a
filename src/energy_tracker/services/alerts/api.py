"""Routes of the alerts service: rules, alerts, acknowledgement and the SSE stream of
transitions. A user sees those of their households, and changes them as their role there
allows (`core.authz`); an admin sees everyone's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import StreamingResponse

from energy_tracker.core.authz import Action, Caller, allows
from energy_tracker.core.directory import DeviceDirectory
from energy_tracker.core.errors import ApiError
from energy_tracker.core.http import (
    answers,
    authorized,
    caller_gone,
    device_directory,
    not_found,
    shutting_down,
    visible_device,
)
from energy_tracker.core.inputs import Offset
from energy_tracker.core.sse import polled_events, sse_frame, sse_response
from energy_tracker.core.stores.metadata import Conflict
from energy_tracker.core.stores.timeseries.base import SeriesStore
from energy_tracker.services.alerts.lifecycle import alert_view
from energy_tracker.services.alerts.models import (
    Alert,
    AlertRule,
    Attempt,
    Delivery,
    condition_of,
)
from energy_tracker.services.alerts.preview import PREVIEW_DAYS, preview
from energy_tracker.services.alerts.schemas import (
    AlertList,
    AlertOut,
    PreviewOut,
    RuleIn,
    RuleList,
    RuleOut,
    RulePatch,
    patch_problems,
    rule_problems,
)
from energy_tracker.services.alerts.service import AlertService
from energy_tracker.services.alerts.store import AlertStore
from energy_tracker.services.alerts.targets import UnsafeTarget, resolve_webhook

router = APIRouter(tags=["alerts"])

Id = Annotated[str, Path(max_length=64)]
HouseholdId = Annotated[
    str | None, Query(max_length=64, description="One of your households; default: all of them.")
]
STREAM_POLL_S = 0.5
STREAM_PAGE = 500
STREAM_KEEPALIVE_S = 15.0
# Transitions committed out of order by concurrent writers are caught within this window.
STREAM_OVERLAP = timedelta(seconds=5)


async def service(request: Request) -> AlertService:
    """FastAPI dependency: the alerts service's parts this process runs."""
    return request.app.state.alerts


def _now() -> datetime:
    return datetime.now(UTC)


def _invalid(problems: list[dict[str, str]]) -> ApiError:
    fields = ", ".join(p["field"] for p in problems[:5])
    return ApiError(422, "invalid", f"invalid alert rule: {fields}", problems)


# -- rules -------------------------------------------------------------------------------------


def rule_out(rule: AlertRule) -> dict[str, Any]:
    """A rule as the API shows it: webhook secrets never leave the service."""
    return {
        "id": rule.id,
        "user_id": rule.owner_id,
        "household_id": rule.household_id,
        "name": rule.name,
        "device_id": rule.device_id,
        "metric": rule.metric,
        "period": rule.period,
        "op": rule.op,
        "threshold": rule.threshold,
        "clear_threshold": rule.clear_threshold,
        "for_s": rule.for_s,
        "cooldown_s": rule.cooldown_s,
        "severity": rule.severity,
        "channels": [{k: v for k, v in c.items() if k != "secret"} for c in rule.channels],
        "created_at": rule.created_at.isoformat(),
        "updated_at": rule.updated_at.isoformat(),
    }


async def _target_problems(
    directory: DeviceDirectory, household_id: str, rule: dict[str, Any], deny_private: bool
) -> list[dict[str, str]]:
    """The checks that need I/O: the device is the rule's household's, the webhooks resolve
    safely."""
    problems = []
    device_id = rule.get("device_id")
    if device_id is not None:
        ctx = (await directory.contexts([device_id])).get(device_id)
        if ctx is None or ctx.household_id != household_id:
            problems.append(
                {"field": "device_id", "message": "not one of this household's devices"}
            )
    for index, channel in enumerate(rule.get("channels") or []):
        if channel["type"] == "webhook":
            try:
                await resolve_webhook(channel["url"], deny_private)
            except UnsafeTarget as exc:
                problems.append({"field": f"channels.{index}.url", "message": str(exc)})
    return problems


async def visible_rule(store: AlertStore, rule_id: str, caller: Caller) -> AlertRule:
    """The rule if the caller may do the route's action on it (see `Caller.check`)."""
    rule = await store.rules.get(rule_id)
    caller.check(rule.household_id if rule else None, "alert rule")
    assert rule is not None  # check() refused a missing rule
    return rule


@router.post("/alert-rules", status_code=201, response_model=RuleOut, responses=answers(404, 409))
async def create_rule(
    body: RuleIn,
    caller: Caller = Depends(authorized),
    alerting: AlertService = Depends(service),
    directory: DeviceDirectory = Depends(device_directory),
) -> dict[str, Any]:
    """Create a rule on a device of a household of yours, or on all of its devices summed
    (no device_id: the household named, else your own)."""
    fields = body.model_dump()
    household_id = fields.pop("household_id")
    if household_id is None and body.device_id is not None:
        # The device's household, if it is one of the caller's (else the 422 below says so).
        ctx = (await directory.contexts([body.device_id])).get(body.device_id)
        if ctx is not None and allows(caller.identity, ctx.household_id, Action.READ):
            household_id = ctx.household_id
    household_id = caller.home(household_id)
    problems = rule_problems(fields)
    problems += await _target_problems(directory, household_id, fields, alerting.deny_private)
    if problems:
        raise _invalid(problems)
    try:
        rule = await alerting.store.rules.create(caller.user_id, household_id, _now(), **fields)
    except Conflict:
        raise ApiError(409, "conflict", "the device was deleted meanwhile") from None
    alerting.check.wake()  # a silence rule may be due before the check's next planned look
    return rule_out(rule)


@router.post(
    "/alert-rules/preview",
    response_model=PreviewOut,
    response_model_by_alias=True,
    responses={
        **answers(404),
        422: {"description": "an invalid rule, or one without a device"},
    },
)
async def preview_rule(
    request: Request,
    body: RuleIn,
    caller: Caller = Depends(authorized),
    directory: DeviceDirectory = Depends(device_directory),
) -> dict[str, Any]:
    """When this (unsaved) rule would have fired over the last 7 days of its device's data,
    judged by the same rule engine as live alerts; nothing is stored or sent."""
    fields = body.model_dump(exclude={"household_id"})
    problems = rule_problems(fields)
    device_id = fields["device_id"]
    if device_id is None:
        problems.append({"field": "device_id", "message": "a preview needs one device"})
    if problems:
        raise _invalid(problems)
    ctx = await visible_device(caller, directory, device_id)
    zone = ZoneInfo(ctx.timezone)
    end = int(time.time() * 1000)
    start = end - PREVIEW_DAYS * 86_400_000
    condition = condition_of(
        fields["op"],
        fields["threshold"],
        fields["clear_threshold"],
        fields["for_s"],
        fields["cooldown_s"],
    )
    series: SeriesStore = request.app.state.series
    profile = (await directory.household_profiles([ctx.household_id])).get(ctx.household_id)
    episodes, observations = await preview(
        series,
        device_id,
        zone,
        fields["metric"],
        fields["period"],
        condition,
        start,
        end,
        profile.country if profile else None,
    )

    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, zone).isoformat()

    return {
        "device_id": device_id,
        "from": iso(start),
        "to": iso(end),
        "observations": observations,
        "alerts": [
            {
                "started_at": iso(e.started_at),
                "resolved_at": None if e.resolved_at is None else iso(e.resolved_at),
                "peak_value": e.peak_value,
            }
            for e in episodes
        ],
    }


@router.get("/alert-rules", response_model=RuleList)
async def list_rules(
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
    household_id: HouseholdId = None,
    caller: Caller = Depends(authorized),
    alerting: AlertService = Depends(service),
) -> dict[str, Any]:
    """The rules of your households (or of the one named; an admin's: everyone's), oldest
    first."""
    scope = caller.scope(household_id)
    rules = await alerting.store.rules.list(scope, limit=limit, offset=offset)
    return {"items": [rule_out(r) for r in rules]}


@router.get("/alert-rules/{rule_id}", response_model=RuleOut)
async def get_rule(
    rule_id: Id,
    caller: Caller = Depends(authorized),
    alerting: AlertService = Depends(service),
) -> dict[str, Any]:
    """One of your rules."""
    return rule_out(await visible_rule(alerting.store, rule_id, caller))


@router.patch("/alert-rules/{rule_id}", response_model=RuleOut)
async def update_rule(
    rule_id: Id,
    body: RulePatch,
    caller: Caller = Depends(authorized),
    alerting: AlertService = Depends(service),
    directory: DeviceDirectory = Depends(device_directory),
) -> dict[str, Any]:
    """Change a rule; the result is checked as a whole, as on creation."""
    rule = await visible_rule(alerting.store, rule_id, caller)
    patch = body.model_dump(exclude_unset=True)
    problems = patch_problems(vars(rule), patch)
    if "channels" in patch and not problems:
        problems = await _target_problems(
            directory, rule.household_id, {"channels": patch["channels"]}, alerting.deny_private
        )
    if problems:
        raise _invalid(problems)
    updated = await alerting.store.rules.update(rule_id, _now(), **patch)
    if updated is None:
        raise not_found("alert rule")
    alerting.check.wake()  # a lower silence threshold may be due sooner
    return rule_out(updated)


@router.delete("/alert-rules/{rule_id}", status_code=204)
async def delete_rule(
    rule_id: Id,
    caller: Caller = Depends(authorized),
    alerting: AlertService = Depends(service),
) -> None:
    """Delete a rule, with its alerts and their notifications."""
    await visible_rule(alerting.store, rule_id, caller)
    await alerting.store.rules.delete(rule_id)


# -- alerts ------------------------------------------------------------------------------------


def _delivery_out(delivery: Delivery, history: list[Attempt] | None) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "channel": delivery.channel,
        "target": delivery.target,
        "event": delivery.event,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_error": delivery.last_error,
        "next_attempt_at": delivery.next_attempt_at.isoformat()
        if delivery.status == "pending"
        else None,
        "delivered_at": delivery.delivered_at.isoformat() if delivery.delivered_at else None,
        "history": None
        if history is None
        else [
            {
                "attempt": a.attempt,
                "at": a.at.isoformat(),
                "ok": a.ok,
                "status_code": a.status_code,
                "error": a.error,
            }
            for a in history
        ],
    }


async def _alerts_out(
    store: AlertStore, found: list[Alert], *, with_history: bool = False
) -> list[dict[str, Any]]:
    rules = await store.rules.by_ids({a.rule_id for a in found})
    deliveries = await store.deliveries.of_alerts([a.id for a in found])
    attempts = (
        await store.deliveries.attempts_of([d.id for ds in deliveries.values() for d in ds])
        if with_history
        else {}
    )
    return [
        {
            **alert_view(a, rules.get(a.rule_id)),
            "deliveries": [
                _delivery_out(d, attempts.get(d.id, []) if with_history else None)
                for d in deliveries.get(a.id, [])
            ],
        }
        for a in found
    ]


async def visible_alert(store: AlertStore, alert_id: str, caller: Caller) -> Alert:
    """The alert if the caller may do the route's action on it (see `Caller.check`)."""
    alert = await store.alerts.get(alert_id)
    caller.check(alert.household_id if alert else None, "alert")
    assert alert is not None  # check() refused a missing alert
    return alert


@router.get("/alerts", response_model=AlertList)
async def list_alerts(
    state: Literal["firing", "resolved", "acknowledged"] | None = None,
    acknowledged: bool | None = None,
    device_id: Annotated[str | None, Query(max_length=64)] = None,
    rule_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
    household_id: HouseholdId = None,
    caller: Caller = Depends(authorized),
    alerting: AlertService = Depends(service),
) -> dict[str, Any]:
    """Alerts of your households (or of the one named; each says its `household_id`), newest
    first; `state=acknowledged` is short for `acknowledged=true`."""
    if state == "acknowledged":
        state, acknowledged = None, True
    found = await alerting.store.alerts.list(
        caller.scope(household_id),
        state=state,
        acknowledged=acknowledged,
        device_id=device_id,
        rule_id=rule_id,
        limit=limit,
        offset=offset,
    )
    return {"items": await _alerts_out(alerting.store, found)}


@router.get(
    "/alerts/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def alert_stream(
    request: Request,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
    household_id: HouseholdId = None,
    caller: Caller = Depends(authorized),
    alerting: AlertService = Depends(service),
) -> StreamingResponse:
    """Server-sent events: one per alert transition of yours (`event:` firing, resolved or
    acknowledged; `id:` the transition id; `data:` the alert-events message). Reconnect with
    `Last-Event-ID` to get what happened since."""
    homes = caller.scope(household_id)
    since = _now()
    if last_event_id:
        since = await alerting.store.transitions.recorded_at(last_event_id, homes) or since
    gone = caller_gone(request, caller.identity)
    return sse_response(_transitions(request, alerting.store, homes, since, last_event_id, gone))


async def _transitions(
    request: Request,
    store: AlertStore,
    homes: list[str] | None,
    since: datetime,
    seen_id: str | None,
    gone: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    """Polls the transitions table; ids already sent within the overlap window are skipped.
    Ends when the client goes, the server stops, or the caller may no longer be served."""
    sent: dict[str, datetime] = {seen_id: since} if seen_id else {}
    stopping = shutting_down(request)

    async def poll() -> tuple[list[bytes], bool]:
        nonlocal since, sent
        frames = []
        # Page by (recorded_at, id) through the overlap window and beyond: a page full of rows
        # already sent must not be read again and again (more than a page of transitions in
        # the window, or at one instant, once stalled the stream for good).
        cursor: tuple[datetime, str | None] = (since - STREAM_OVERLAP, None)
        while True:
            page = await store.transitions.since(homes, cursor[0], STREAM_PAGE, cursor[1])
            for tid, recorded, payload in page:
                if tid in sent:
                    continue
                sent[tid] = recorded
                since = max(since, recorded)
                frames.append(sse_frame(tid, payload["state"], orjson.dumps(payload)))
            if len(page) < STREAM_PAGE:
                break
            cursor = (page[-1][1], page[-1][0])
        sent = {t: at for t, at in sent.items() if at >= since - STREAM_OVERLAP}
        return frames, False

    async def stopped() -> bool:
        return stopping.is_set() or await request.is_disconnected() or await gone()

    async for frame in polled_events(
        b"retry: 3000\n\n", poll, lambda: asyncio.sleep(STREAM_POLL_S), stopped, STREAM_KEEPALIVE_S
    ):
        yield frame


@router.get("/alerts/{alert_id}", response_model=AlertOut)
async def get_alert(
    alert_id: Id,
    caller: Caller = Depends(authorized),
    alerting: AlertService = Depends(service),
) -> dict[str, Any]:
    """One alert, with every attempt of each of its notifications."""
    alert = await visible_alert(alerting.store, alert_id, caller)
    (out,) = await _alerts_out(alerting.store, [alert], with_history=True)
    return out


@router.post("/alerts/{alert_id}/ack", response_model=AlertOut)
async def acknowledge_alert(
    alert_id: Id,
    caller: Caller = Depends(authorized),
    alerting: AlertService = Depends(service),
) -> dict[str, Any]:
    """Acknowledge an alert (firing or resolved); acknowledging it again changes nothing."""
    alert = await visible_alert(alerting.store, alert_id, caller)
    rule = await alerting.store.rules.get(alert.rule_id)
    if rule is None:
        raise not_found("alert")
    acked, event = await alerting.store.alerts.acknowledge(alert, rule, _now())
    if event is not None:
        await alerting.evaluator.publisher.publish([event])
    (out,) = await _alerts_out(alerting.store, [acked])
    return out
