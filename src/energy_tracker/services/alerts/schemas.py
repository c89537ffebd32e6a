"""Request and response bodies of the alerts service.

Field by field checks live on the models; the checks that look at several fields at once live in
`rule_problems`, so a PATCH is judged on the rule it would produce, not on the patch alone.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from energy_tracker.core.validators import Name, Strict
from energy_tracker.services.alerts.targets import UnsafeTarget, split_webhook_url

Metric = Literal["power_w", "energy_kwh", "cost", "silence", "anomaly"]
Period = Literal["instant", "hour", "day", "month"]
Op = Literal["gt", "lt"]
Severity = Literal["info", "warning", "critical"]
Finite = Annotated[float, Field(allow_inf_nan=False, ge=-1e12, le=1e12)]
# A wait (for, cooldown) is whole seconds, none of them negative; at most 30 days.
Seconds = Annotated[int, Field(ge=0, le=30 * 86_400)]
MAX_SILENCE_S = 30 * 86_400


class WebhookChannel(Strict):
    type: Literal["webhook"]
    url: str = Field(min_length=1, max_length=2048)
    secret: str = Field(
        min_length=8, max_length=256, description="Signs each body: X-Signature: sha256=<hex>."
    )

    @field_validator("url")
    @classmethod
    def http_url(cls, value: str) -> str:
        try:
            split_webhook_url(value)
        except UnsafeTarget as exc:
            raise ValueError(str(exc)) from None
        return value


class EmailChannel(Strict):
    type: Literal["email"]
    to: EmailStr


Channel = Annotated[WebhookChannel | EmailChannel, Field(discriminator="type")]


class RuleIn(Strict):
    name: Annotated[Name, Field(min_length=1)]
    device_id: str | None = Field(
        default=None, max_length=64, description="Null: all the household's devices, summed."
    )
    household_id: str | None = Field(
        default=None,
        max_length=64,
        description="One of your households; default: the device's, else your own.",
    )
    metric: Metric
    period: Period | None = Field(
        default=None,
        description="instant for power_w, silence and anomaly; hour, day or month else.",
    )
    op: Op = "gt"
    threshold: Finite = Field(
        description="W, kWh, currency, for silence seconds, for anomaly the score above which "
        "an anomaly alerts (0: any the detector flags)."
    )
    clear_threshold: Finite | None = None
    for_s: Seconds = 0
    cooldown_s: Seconds = 0
    severity: Severity = "warning"
    channels: list[Channel] = Field(default_factory=list, max_length=10)


class RulePatch(Strict):
    name: Annotated[Name, Field(min_length=1)] | None = None
    device_id: str | None = Field(default=None, max_length=64)
    metric: Metric | None = None
    period: Period | None = None
    op: Op | None = None
    threshold: Finite | None = None
    clear_threshold: Finite | None = None
    for_s: Seconds | None = None
    cooldown_s: Seconds | None = None
    severity: Severity | None = None
    channels: list[Channel] | None = Field(default=None, max_length=10)


# What a rule measures; a PATCH may not change it (the state and alerts would mean nothing).
IMMUTABLE = ("device_id", "metric", "period", "op")
# Fields a PATCH may not set to null (clear_threshold may: that removes the hysteresis).
REQUIRED = ("name", "threshold", "for_s", "cooldown_s", "severity", "channels")


def rule_problems(rule: dict[str, Any]) -> list[dict[str, str]]:
    """What is wrong with a whole rule (field-checked already), as {field, message} items;
    fills in the default period."""
    problems = []
    metric, op = rule["metric"], rule["op"]
    if metric in ("power_w", "silence", "anomaly"):
        if rule.get("period") not in (None, "instant"):
            problems.append(_problem("period", f"{metric} is checked at each instant: use instant"))
        rule["period"] = "instant"
    elif rule.get("period") not in ("hour", "day", "month"):
        problems.append(_problem("period", f"{metric} so far in a period: use hour, day or month"))
    if metric != "power_w" and op != "gt":
        problems.append(_problem("op", f"{metric} alerts fire above the threshold: use gt"))
    if metric == "anomaly" and rule["threshold"] < 0:
        problems.append(_problem("threshold", "an anomaly's score: 0 or more"))
    if metric == "silence":
        if not 1 <= rule["threshold"] <= MAX_SILENCE_S:
            problems.append(
                _problem("threshold", f"seconds without a reading, from 1 to {MAX_SILENCE_S}")
            )
        if rule.get("clear_threshold") is not None:
            problems.append(_problem("clear_threshold", "silence clears when a reading arrives"))
        return problems
    clear = rule.get("clear_threshold")
    if clear is not None and (
        clear > rule["threshold"] if op == "gt" else clear < rule["threshold"]
    ):
        side = "at or below" if op == "gt" else "at or above"
        problems.append(_problem("clear_threshold", f"must be {side} the threshold"))
    return problems


def patch_problems(current: dict[str, Any], patch: dict[str, Any]) -> list[dict[str, str]]:
    """What is wrong with applying `patch` to a rule whose fields are `current`; takes out of
    `patch` the unchangeable fields it merely repeats."""
    problems = []
    for field in IMMUTABLE:
        if field in patch and patch.pop(field) != current[field]:
            problems.append(_problem(field, "cannot be changed: create a new rule"))
    problems += [
        _problem(f, "may not be null") for f in REQUIRED if f in patch and patch[f] is None
    ]
    return problems or rule_problems({**current, **patch})


def _problem(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


class ChannelOut(BaseModel):
    type: Literal["webhook", "email"]
    url: str | None = Field(default=None, description="Webhooks; the secret is never shown.")
    to: str | None = None


class RuleOut(BaseModel):
    id: str
    user_id: str = Field(description="the account that made it")
    household_id: str
    name: str
    device_id: str | None
    metric: Metric
    period: Period
    op: Op
    threshold: float
    clear_threshold: float | None
    for_s: int
    cooldown_s: int
    severity: Severity
    channels: list[ChannelOut]
    created_at: str
    updated_at: str


class RuleList(BaseModel):
    items: list[RuleOut]


class AttemptOut(BaseModel):
    attempt: int
    at: str
    ok: bool
    status_code: int | None
    error: str | None


class DeliveryOut(BaseModel):
    id: str
    channel: Literal["webhook", "email"]
    target: str
    event: Literal["firing", "resolved"]
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_error: str | None
    next_attempt_at: str | None
    delivered_at: str | None
    history: list[AttemptOut] | None = Field(
        default=None, description="Every attempt (on GET /alerts/{id} only)."
    )


class AlertOut(BaseModel):
    id: str
    rule_id: str
    rule_name: str | None = None
    metric: Metric | None = None
    user_id: str = Field(description="the account that made its rule")
    household_id: str
    device_id: str | None
    state: Literal["firing", "resolved"]
    acknowledged: bool
    acknowledged_at: str | None
    severity: Severity
    value: float
    peak_value: float
    threshold: float
    started_at: str
    resolved_at: str | None
    last_seen_at: str
    deliveries: list[DeliveryOut]


class AlertList(BaseModel):
    items: list[AlertOut]


class PreviewAlertOut(BaseModel):
    started_at: str
    resolved_at: str | None = Field(description="Null: still firing at the end of the window.")
    peak_value: float


class PreviewOut(BaseModel):
    device_id: str
    start: str = Field(alias="from")
    end: str = Field(alias="to")
    observations: int = Field(description="How many observations the rule judged.")
    alerts: list[PreviewAlertOut]

    model_config = ConfigDict(populate_by_name=True)
