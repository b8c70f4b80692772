"""TuSimple data: labels and SCNN targets (:mod:`lanedet.data.tusimple`) and dataset preparation
(:mod:`lanedet.data.prepare`). Import from those modules; this package imports nothing on its own."""
