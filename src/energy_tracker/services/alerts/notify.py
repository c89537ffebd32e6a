"""The notification dispatcher: sends the outbox (`alert_deliveries`) off the evaluation path.

Evaluation only writes delivery rows; this loop claims the due ones and sends them, several at
once, so a webhook that hangs for its whole timeout delays nothing but itself. Every attempt is
recorded. A failed delivery is retried with exponential backoff for about an hour
(`RetryPolicy`), then marked failed, which the alert shows. Delivery is at least once: a
receiver that answered but whose answer we never recorded gets the same delivery id again.

Webhooks are POSTed as JSON with `X-Signature: sha256=<hex HMAC-SHA256 of the body>` under the
rule's secret and `X-Delivery-Id`, to the address `targets.resolve_webhook` checked.
E-mail goes over SMTP to ET_SMTP_URL: `smtp://[user:password@]host[:port][?from=addr]`
(STARTTLS when the server offers it; `starttls=0` to never, `smtps://` for TLS from the start).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpx
import orjson
from prometheus_client import Counter

from energy_tracker import __version__
from energy_tracker.core.failures import is_transient
from energy_tracker.core.loops import Stopper
from energy_tracker.core.urls import SmtpServer
from energy_tracker.services.alerts.models import Attempt, Delivery
from energy_tracker.services.alerts.store.deliveries import DeliveryOutbox
from energy_tracker.services.alerts.targets import UnsafeTarget, resolve_webhook

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a failed delivery again: 4 s, 8 s, 16 s … (at most 10 min apart), until the
    next try would come more than an hour after the delivery was created (13 tries, the last
    57 minutes after the first)."""

    first_delay_s: float = 4.0
    max_delay_s: float = 600.0
    window_s: float = 3600.0

    def next_delay_s(self, attempts: int) -> float:
        """The wait after the `attempts`th failed attempt."""
        return min(self.first_delay_s * 2 ** (attempts - 1), self.max_delay_s)


class DeliveryFailed(Exception):
    """One attempt failed; `final` when trying again cannot help."""

    def __init__(self, message: str, status_code: int | None = None, final: bool = False) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.final = final


NOTIFICATIONS = Counter(
    "et_notifications_total",
    "Delivery attempts: sent, retrying (tried again later) or failed (for good)",
    ["channel", "outcome"],
)


RETRY_PAUSE_S = 0.05
"""The shortest sleep of the dispatch loop, when a delivery that was due could not be claimed
(another dispatcher holds it): so that it never spins."""
FAILED_PAUSE_S = 1.0
"""The sleep after a failed round (the database away)."""


def signature(secret: str, body: bytes) -> str:
    """The X-Signature header value of a webhook body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Dispatcher:
    """Sends due deliveries until stopped; any number may run against one database."""

    def __init__(
        self,
        outbox: DeliveryOutbox,
        *,
        smtp: SmtpServer | None,
        deny_private: bool,
        retry: RetryPolicy | None = None,
        timeout_s: float = 10.0,
        concurrency: int = 16,
        poll_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.smtp = smtp
        self.deny_private = deny_private
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.clock = clock
        self.concurrency = concurrency
        self._wake = asyncio.Event()
        self._stopper = Stopper()
        self._sending: set[asyncio.Task[None]] = set()
        # No proxies from the environment: the checked address must be the one connected to.
        self._http = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, trust_env=False)

    def wake(self) -> None:
        """New deliveries were written: look now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stopper.stop()
        self._wake.set()

    async def run(self) -> None:
        """Send what is due, then sleep until the next delivery comes due, new ones are written
        here (`wake`), a send ends, or `poll_s` passed (deliveries another process wrote), until
        stopped; sends in flight are allowed to finish. Idle, it wakes once per `poll_s`."""
        try:
            while not self._stopper.stopped:
                self._wake.clear()
                try:
                    await self.dispatch_due()
                    pause = await self.pause_s()
                except Exception as exc:
                    if is_transient(exc):  # the database restarting: one line, not a traceback
                        log.warning("notifications wait: the database is away (%s)", exc)
                    else:
                        log.exception("dispatching notifications failed; trying again shortly")
                    pause = FAILED_PAUSE_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), pause)
            await self.settle()
        finally:
            await self._http.aclose()

    async def pause_s(self) -> float:
        """How long to sleep before looking again: until the earliest pending delivery comes due,
        at most `poll_s`; `poll_s` while every send slot is taken (an ending send wakes the
        loop)."""
        if len(self._sending) >= self.concurrency:
            return self.poll_s
        due = await self.outbox.next_attempt_at()
        if due is None:
            return self.poll_s
        return min(max((due - self._now()).total_seconds(), RETRY_PAUSE_S), self.poll_s)

    def _sent(self, task: asyncio.Task[None]) -> None:
        """A send ended: its slot is free, and its retry may be the earliest due."""
        self._sending.discard(task)
        self._wake.set()

    async def settle(self) -> None:
        """Wait for the sends in flight (each is bounded by the timeout)."""
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=self.timeout_s + 1)

    async def dispatch_due(self) -> int:
        """Claim as many due deliveries as there are free slots and start sending them."""
        free = self.concurrency - len(self._sending)
        if free <= 0:
            return 0
        now = self._now()
        started = 0
        for delivery in await self.outbox.due(now, free):
            lease = now + timedelta(seconds=self.timeout_s * 2 + 30)
            if not await self.outbox.claim(delivery, lease):
                continue
            task = asyncio.create_task(self._attempt(delivery), name=f"deliver:{delivery.id}")
            self._sending.add(task)
            task.add_done_callback(self._sent)
            started += 1
        return started

    async def _attempt(self, delivery: Delivery) -> None:
        number = delivery.attempts + 1
        try:
            status_code: int | None = None
            error: str | None = None
            final = False
            try:
                if delivery.channel == "webhook":
                    status_code = await self._post(delivery)
                else:
                    await self._mail(delivery)
            except DeliveryFailed as exc:
                error, status_code, final = str(exc)[:500], exc.status_code, exc.final
            now = self._now()
            attempt = Attempt(delivery.id, number, now, error is None, status_code, error)
            if error is None:
                NOTIFICATIONS.labels(delivery.channel, "sent").inc()
                await self.outbox.record_attempt(attempt, status="delivered", next_attempt_at=None)
                return
            next_at = now + timedelta(seconds=self.retry.next_delay_s(number))
            out_of_time = (next_at - delivery.created_at).total_seconds() > self.retry.window_s
            if final or out_of_time:
                log.warning("delivery %s failed for good: %s", delivery.id, error)
                NOTIFICATIONS.labels(delivery.channel, "failed").inc()
                await self.outbox.record_attempt(attempt, status="failed", next_attempt_at=None)
            else:
                NOTIFICATIONS.labels(delivery.channel, "retrying").inc()
                await self.outbox.record_attempt(attempt, status="pending", next_attempt_at=next_at)
        except Exception:
            # The claim's lease brings the delivery back; nothing is lost, only delayed.
            log.exception("recording delivery %s failed", delivery.id)

    async def _post(self, delivery: Delivery) -> int:
        try:
            addresses = await resolve_webhook(delivery.target, self.deny_private)
        except UnsafeTarget as exc:
            raise DeliveryFailed(f"refused: {exc}", final=True) from None
        url = httpx.URL(delivery.target)
        body = delivery.payload.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"energy-tracker/{__version__}",
            "Host": url.netloc.decode("ascii"),
            "X-Delivery-Id": delivery.id,
            "X-Event": delivery.event,
            "X-Signature": signature(delivery.secret or "", body),
        }
        request = self._http.build_request(
            "POST",
            url.copy_with(host=str(addresses[0])),
            content=body,
            headers=headers,
            extensions={"sni_hostname": url.host} if url.scheme == "https" else {},
        )
        # The whole exchange within the timeout (a receiver dripping a byte at a time holds a
        # send slot no longer than that), and the answer's body never read (it could be GBs):
        # its status is all a delivery needs.
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self._http.send(request, stream=True)
                await response.aclose()
        except (httpx.HTTPError, OSError, TimeoutError):
            # One message for refused, reset and timed out alike, and no address: the errors
            # are shown to the rule's owner, who must not learn from them which internal
            # ports are open, nor what a name resolves to.
            raise DeliveryFailed(f"no answer within {self.timeout_s:g} s") from None
        if not response.is_success:
            raise DeliveryFailed(f"HTTP {response.status_code}", response.status_code)
        return response.status_code

    async def _mail(self, delivery: Delivery) -> None:
        if self.smtp is None:
            raise DeliveryFailed("e-mail is not configured (ET_SMTP_URL)", final=True)
        message = email_message(delivery, self.smtp.sender)
        try:
            await aiosmtplib.send(
                message,
                hostname=self.smtp.host,
                port=self.smtp.port,
                username=self.smtp.username,
                password=self.smtp.password,
                use_tls=self.smtp.use_tls,
                start_tls=self.smtp.start_tls,
                timeout=self.timeout_s,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(f"SMTP: {exc}") from None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)


def email_message(delivery: Delivery, sender: str) -> EmailMessage:
    """The e-mail of a delivery: a short text for people, the webhook body for machines."""
    body: dict[str, Any] = orjson.loads(delivery.payload)
    alert = body["alert"]
    name = alert.get("rule_name") or alert["rule_id"]
    message = EmailMessage()
    message["From"] = sender
    message["To"] = delivery.target
    message["Subject"] = f"[{alert['severity'].upper()}] {name}: {delivery.event}"
    message["Message-ID"] = f"<{delivery.id}@energy-tracker>"
    message["X-Delivery-Id"] = delivery.id
    lines = [
        f"Alert {name!r} is {delivery.event}.",
        "",
        f"device:     {alert['device_id'] or 'all devices'}",
        f"metric:     {alert.get('metric', '')}",
        f"value:      {alert['value']:g} (threshold {alert['threshold']:g}, "
        f"peak {alert['peak_value']:g})",
        f"started:    {alert['started_at']}",
    ]
    if alert["resolved_at"]:
        lines.append(f"resolved:   {alert['resolved_at']}")
    lines += ["", f"alert id:   {alert['id']}", f"delivery:   {delivery.id}"]
    message.set_content("\n".join(lines) + "\n")
    return message
