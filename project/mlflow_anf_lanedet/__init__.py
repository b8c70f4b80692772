"""lanedet: SCNN lane detection on TuSimple (model, data, metric). Knows nothing of MLflow or Kubernetes."""

__version__ = "0.1.0"
