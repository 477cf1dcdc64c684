from finetuning.tracking.tracker import ExperimentTracker, MetricValue

__all__ = ["ExperimentTracker", "MetricValue"]
