"""mlflow-anf: reproducible distributed training on Kubernetes from storage snapshots, as an MLflow plugin."""

__version__ = "0.1.0"
