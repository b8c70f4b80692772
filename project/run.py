"""Run the `lanedet` command of *this checkout*: ``python project/run.py train --data-dir ...``.

The MLproject's entry points call this file rather than ``python -m mlflow_anf_lanedet.cli`` so that a run always
executes the code of the project directory MLflow hands it (``mlflow run <git-uri> --version X`` checks out X): Python
puts this file's directory first on ``sys.path``, so ``mlflow_anf_lanedet`` and the repository's ``mlflow_anf`` come
from the checkout even where other copies are installed, and the run's provenance records that checkout.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    sys.path[:1] = [str(here), str(here.parent)]  # project/ (the training code), then the repository root (the plugin)
    from mlflow_anf_lanedet.cli import main

    main(prog_name="lanedet")
