"""TuSimple data: labels and SCNN targets (:mod:`mlflow_anf_lanedet.data.tusimple`) and dataset preparation
(:mod:`mlflow_anf_lanedet.data.prepare`). Import from those modules; this package imports nothing on its own."""
