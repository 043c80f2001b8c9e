"""Training health: is the run learning, still at its initial weights, or collapsed?

``signals`` measures, ``verdict`` judges (one definition of "learning" for runs and benchmarks alike),
``health`` runs it inside a pretraining run and writes ``health.json`` / ``health.png``.
"""
from organfm.monitor.health import HealthMonitor, read_health
from organfm.monitor.verdict import COLLAPSED, LEARNING, NOT_LEARNING, THRESHOLDS, Verdict, judge

__all__ = ["COLLAPSED", "HealthMonitor", "LEARNING", "NOT_LEARNING", "THRESHOLDS", "Verdict", "judge", "read_health"]
