"""Experiment tracking (MLflow): a run per job, a nested run per attempt."""

from .hooks import TrackingHooks, tracking_uri
from .mlflow_tracker import MlflowTracker

__all__ = ["MlflowTracker", "TrackingHooks", "tracking_uri"]
