"""The ``mpijob`` MLflow project backend: run an MLproject entry point as a Kubeflow MPIJob (v2beta1).

Modules: :mod:`.config` (the backend config model), :mod:`.render` (pure manifest rendering),
:mod:`.launcher` (the wrapper run inside the launcher pod), :mod:`.submitted_run` (status, logs, cancel),
:mod:`.plugin` (the MLflow ``AbstractBackend``), :mod:`.doctor` (cluster checks) and :mod:`.cli`.
Nothing here imports kubernetes or MLflow at import time.
"""
