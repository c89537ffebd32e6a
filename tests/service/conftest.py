"""Fixtures of the service tier: the alerts harness and its real notification receivers."""

from __future__ import annotations

from tests.alert_receivers import mailbox, webhook  # noqa: F401 - fixtures
from tests.service.alerting import alerting  # noqa: F401 - fixture
