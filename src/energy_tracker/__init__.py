"""Home Energy Tracker: readings in, correct usage, cost, alerts and insights out."""

__version__ = "0.1.0"
