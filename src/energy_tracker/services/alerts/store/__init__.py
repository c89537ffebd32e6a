"""Everything the alerts service keeps in the metadata database, one module per concern:
rules (`rules.py`), the evaluation unit of work (`evaluation.py`), the alerts users see
(`alerts.py`), and two outboxes, transitions for `alert-events` (`transitions.py`) and
notifications for the dispatcher (`deliveries.py`)."""

from __future__ import annotations

from energy_tracker.core.stores.metadata import Database
from energy_tracker.services.alerts.store.alerts import AlertLog
from energy_tracker.services.alerts.store.deliveries import DeliveryOutbox
from energy_tracker.services.alerts.store.evaluation import EvaluationStore
from energy_tracker.services.alerts.store.rules import RuleStore
from energy_tracker.services.alerts.store.transitions import TransitionOutbox


class AlertStore:
    """The alerts service's stores over one database, each with its own reason to change."""

    def __init__(self, db: Database) -> None:
        self.rules = RuleStore(db)
        self.evaluations = EvaluationStore(db)
        self.alerts = AlertLog(db)
        self.transitions = TransitionOutbox(db)
        self.deliveries = DeliveryOutbox(db)
