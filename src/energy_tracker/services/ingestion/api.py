"""Routes of the ingestion service: readings in over HTTP, onto `energy-readings`."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import TypeAdapter, ValidationError

from energy_tracker.core.auth import Identity
from energy_tracker.core.errors import ApiError
from energy_tracker.core.http import answers, user_or_device_identity
from energy_tracker.core.inputs import READINGS_BODY_BYTES
from energy_tracker.services.ingestion.recorder import READINGS_REFUSED, ReadingRecorder
from energy_tracker.services.ingestion.schemas import (
    ONE_READING,
    READING_BATCH,
    AcceptedOut,
)

MAX_BODY_BYTES = READINGS_BODY_BYTES  # also the largest MQTT payload

router = APIRouter(tags=["ingestion"])
# Parsed by hand in post_readings (one orjson pass, per-item errors); documented by app.py.
HAND_PARSED_BODIES: dict[str, TypeAdapter[Any]] = {
    "ReadingIn": ONE_READING,
    "ReadingBatchIn": READING_BATCH,
}


async def recorder(request: Request) -> ReadingRecorder:
    """FastAPI dependency: the reading recorder (checks, then publishes)."""
    return request.app.state.recorder


@router.post(
    "/readings",
    status_code=202,
    response_model=AcceptedOut,
    responses=answers(400),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [
                            {"$ref": "#/components/schemas/ReadingIn"},
                            {"$ref": "#/components/schemas/ReadingBatchIn"},
                        ]
                    }
                }
            },
        }
    },
)
async def post_readings(
    request: Request,
    identity: Identity = Depends(user_or_device_identity),
    rec: ReadingRecorder = Depends(recorder),
) -> AcceptedOut:
    """One reading or {"readings": [...]}: all accepted durably (202), or none (4xx/503)."""
    try:
        raw = orjson.loads(await request.body())  # bounded by BodyGuard
    except orjson.JSONDecodeError as exc:
        READINGS_REFUSED.labels("http", "schema").inc()
        raise ApiError(400, "bad_request", f"body is not JSON: {exc}") from None
    is_batch = isinstance(raw, dict) and "readings" in raw
    try:
        items = (
            READING_BATCH.validate_python(raw)["readings"]
            if is_batch
            else [ONE_READING.validate_python(raw)]
        )
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
            for e in exc.errors(include_url=False)[:100]
        ]
        READINGS_REFUSED.labels("http", "schema").inc(
            len(raw["readings"]) if is_batch and isinstance(raw["readings"], list) else 1
        )
        raise ApiError(422, "invalid", "invalid readings", details) from None
    accepted = await rec.record(items, identity)
    return AcceptedOut(accepted=accepted)
