"""Notifications from the outbox to real receivers: a webhook on loopback that fails before it
succeeds, one that never does, an SMTP server (aiosmtpd), and a webhook that hangs while the
rest of the alerting carries on."""

from __future__ import annotations

import asyncio
import threading

from energy_tracker.core.urls import SmtpServer
from energy_tracker.services.alerts.notify import RetryPolicy
from tests.alert_receivers import MailReceiver, WebhookReceiver
from tests.service.alerting import SECRET, Alerting, delivered, eventually


async def test_a_webhook_failing_three_times_then_succeeding_is_delivered_once_signed(
    alerting: Alerting, webhook: WebhookReceiver
) -> None:
    webhook.fail_first = 3
    await alerting.rule()
    await alerting.readings((-1, 2500.0))
    (delivery,) = await alerting.notify(delivered(1))
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("delivered", 4, None)
    # The same body under the same delivery id, four times; only the fourth answered 200.
    assert [h.status for h in webhook.hits] == [500, 500, 500, 200]
    assert {h.headers["x-delivery-id"] for h in webhook.hits} == {delivery.id}
    assert len({h.body for h in webhook.hits}) == 1
    (ok,) = webhook.delivered()
    assert ok.signed_by(SECRET)
    assert not ok.signed_by("another secret")
    assert ok.json["delivery_id"] == delivery.id and ok.json["event"] == "firing"
    assert ok.json["alert"]["value"] == 2500.0 and ok.json["alert"]["state"] == "firing"
    history = (await alerting.store.deliveries.attempts_of([delivery.id]))[delivery.id]
    assert [(a.attempt, a.ok, a.status_code, a.error) for a in history] == [
        (1, False, 500, "HTTP 500"),
        (2, False, 500, "HTTP 500"),
        (3, False, 500, "HTTP 500"),
        (4, True, 200, None),
    ]
    # Nothing more is sent later.
    await alerting.notify(lambda found: True, rounds=5)
    assert len(webhook.hits) == 4


async def test_a_webhook_that_never_succeeds_is_marked_failed_after_the_window(
    alerting: Alerting, webhook: WebhookReceiver
) -> None:
    # Waits of 1, 2, 4, 8, 8 s after attempts made at 0, 1, 3, 7, 15, 23 s; a 7th would come at
    # 31 s, past the 30 s window: failed after 6 attempts.
    webhook.fail_first = 1000
    await alerting.use_dispatcher(
        smtp=None,
        deny_private=False,
        retry=RetryPolicy(first_delay_s=1, max_delay_s=8, window_s=30),
    )
    await alerting.rule()
    await alerting.readings((-1, 2500.0))
    (delivery,) = await alerting.notify(lambda ds: ds[0].status == "failed", step_s=0.5)
    assert (delivery.attempts, delivery.last_error) == (6, "HTTP 500")
    assert len(webhook.hits) == 6


async def test_e_mail_goes_over_smtp(alerting: Alerting, mailbox: MailReceiver) -> None:
    await alerting.use_dispatcher(smtp=SmtpServer.from_url(mailbox.url), deny_private=False)
    await alerting.rule(severity="critical", channels=[{"type": "email", "to": "me@example.com"}])
    await alerting.readings((-2, 2500.0), (-1, 1000.0))
    deliveries = await alerting.notify(delivered(2))
    assert [(d.channel, d.event) for d in deliveries] == [
        ("email", "firing"),
        ("email", "resolved"),
    ]
    assert len(mailbox.messages) == 2
    firing = next(
        m for m in mailbox.messages if m["Message-ID"] == f"<{deliveries[0].id}@energy-tracker>"
    )
    assert firing["From"] == "alerts@example.com" and firing["To"] == "me@example.com"
    assert firing["Subject"] == "[CRITICAL] kettle on: firing"
    text = firing.get_payload()
    assert "value:      2500 (threshold 2000, peak 2500)" in text


async def test_e_mail_without_a_server_fails_at_once_saying_so(alerting: Alerting) -> None:
    await alerting.rule(channels=[{"type": "email", "to": "me@example.com"}])
    await alerting.readings((-1, 2500.0))
    (delivery,) = await alerting.notify(lambda ds: ds[0].status == "failed")
    assert (delivery.attempts, delivery.last_error) == (1, "e-mail is not configured (ET_SMTP_URL)")


async def test_a_target_refused_at_send_time_is_never_called(
    alerting: Alerting, webhook: WebhookReceiver
) -> None:
    await alerting.use_dispatcher(smtp=None, deny_private=True)
    await alerting.rule()
    await alerting.readings((-1, 2500.0))
    (delivery,) = await alerting.notify(lambda ds: ds[0].status == "failed")
    assert delivery.last_error is not None
    assert delivery.last_error.startswith("refused: 127.0.0.1 is a loopback or private address")
    assert webhook.hits == []


async def test_a_hanging_webhook_delays_nothing_but_itself(
    alerting: Alerting, webhook: WebhookReceiver
) -> None:
    # The first POST is held by the receiver. Meanwhile the alert resolves (evaluation goes on)
    # and the resolution's POST goes out and is answered.
    webhook.hold_first = threading.Event()
    await alerting.use_dispatcher(smtp=None, deny_private=False, poll_s=0.05)
    sending = asyncio.create_task(alerting.dispatcher.run())
    try:
        await alerting.rule()
        await alerting.readings((-2, 2500.0))

        async def posts(n: int) -> bool:
            return len(webhook.hits) >= n

        async def resolution_delivered() -> bool:
            return any(
                d.event == "resolved" and d.status == "delivered"
                for d in await alerting.deliveries()
            )

        await eventually(lambda: posts(1))
        await alerting.readings((-1, 1000.0))
        (alert,) = await alerting.alerts()
        assert alert.state == "resolved"
        await eventually(lambda: posts(2))
        assert [h.json["event"] for h in webhook.hits] == ["firing", "resolved"]
        await eventually(resolution_delivered)
        firing = next(d for d in await alerting.deliveries() if d.event == "firing")
        assert firing.status == "pending"  # still waiting for the held receiver
    finally:
        webhook.hold_first.set()
        alerting.dispatcher.stop()
        await asyncio.wait_for(sending, 15)
    assert {d.status for d in await alerting.deliveries()} == {"delivered"}
