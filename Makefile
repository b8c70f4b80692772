# Two commands on a fresh machine: `make demo` and `make test`. Everything is installed into .venv by `make setup`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU wheel by default; on a GPU machine set TORCH_SPEC to the CUDA build you want.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev

DEMO_DIR ?= demo
# The demo fits its schedule to a time budget on the machine it runs on (set-up included): `lanedet budget` times
# real training steps after the data are made and picks the most epochs, up to DEMO_EPOCHS (the full schedule),
# that end in time. DEMO_MINUTES=60 on 2 CPU cores runs the full schedule.
DEMO_MINUTES ?= 15
DEMO_FRAMES ?= 1500
DEMO_EPOCHS ?= 20
DEMO_BACKBONE ?= resnet18_lite
DEMO_INPUT ?= 128x224
DEMO_BATCH ?= 8
# AdamW trains the existence branch in this short schedule (SGD leaves it at the base rate); mirroring only: zoom,
# shift and photometric changes slow this short schedule down, no augmentation over-fits by epoch 12
DEMO_OPTIMIZER ?= adamw
DEMO_LR ?= 0.008
DEMO_AUGMENT ?= flip
DEMO_LANE_FIT ?= road
# The train params of the demo, shared by the budget measurement and the run (epochs come from the budget).
DEMO_PARAMS = -P backbone=$(DEMO_BACKBONE) -P input_size=$(DEMO_INPUT) -P batch_size=$(DEMO_BATCH) \
    -P val_batch_size=32 -P num_workers=1 -P optimizer=$(DEMO_OPTIMIZER) -P lr=$(DEMO_LR) -P augment=$(DEMO_AUGMENT) \
    -P lane_fit=$(DEMO_LANE_FIT)
DEMO_TRACKING_URI ?= sqlite:///$(abspath $(DEMO_DIR))/mlflow.db
# The two real TuSimple frames in fixtures/ get prediction overlays too.
comma := ,
space := $(subst x, ,x)
DEMO_OVERLAYS ?= $(subst $(space),$(comma),$(strip $(wildcard $(abspath fixtures/tusimple)/*.jpg)))

.PHONY: setup setup-system setup-horovod test demo demo-ui bench clean help

help:
	@echo "make demo   - set up .venv, generate synthetic TuSimple data, train SCNN via 'mlflow run' (CPU; fits DEMO_MINUTES=$(DEMO_MINUTES))"
	@echo "make test   - set up .venv and run the test suite"
	@echo "make bench  - run the benchmarks (quick mode)"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml project/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[$(EXTRAS)]" -e ./project
	touch $@

# Debian packages the tests run for real (Open MPI, sshd, ip netns, PostgreSQL, Chromium): installed as root,
# otherwise named. CI runs as root. `make test` needs them; `make demo` does not.
setup-system:
	scripts/install_system_packages.sh

# Horovod is optional for users (strategy=horovod) and needed by the tests; built once (with MPI where Open MPI is
# installed, Gloo always), wheel cached in ~/.cache.
# The script itself checks what is installed (a few seconds), so that installing Open MPI later upgrades the build.
setup-horovod: $(VENV)/.installed
	if [ "$(WITH_HOROVOD)" != 0 ]; then PY=$(PY) scripts/install_horovod.sh; fi  # WITH_HOROVOD=0 skips it

test: setup-system setup setup-horovod
	$(PY) -m pytest -q

demo:
	@mkdir -p $(DEMO_DIR) && date +%s > $(DEMO_DIR)/.started
	@$(MAKE) --no-print-directory setup
	$(PY) project/run.py synth --out $(DEMO_DIR)/download --frames $(DEMO_FRAMES) --seed 7 --workers 2 --overwrite
	$(PY) project/run.py prepare --src $(DEMO_DIR)/download --out $(DEMO_DIR)/tusimple --overwrite
	$(PY) project/run.py budget --minutes $(DEMO_MINUTES) --started-at $$(cat $(DEMO_DIR)/.started) \
	    -P data_dir=$(abspath $(DEMO_DIR))/tusimple -P epochs=$(DEMO_EPOCHS) $(DEMO_PARAMS) \
	    --write-params $(DEMO_DIR)/schedule.params
	@mkdir -p $(DEMO_DIR)/artifacts
	MLFLOW_TRACKING_URI=$(DEMO_TRACKING_URI) $(PY) -m mlflow experiments create -n lanedet-demo \
	    -l $(abspath $(DEMO_DIR))/artifacts >/dev/null 2>&1 || true
	source $(VENV)/bin/activate && MLFLOW_TRACKING_URI=$(DEMO_TRACKING_URI) mlflow run . -e train \
	    --env-manager local --experiment-name lanedet-demo \
	    -P data_dir=$(abspath $(DEMO_DIR))/tusimple -P output_dir=$(abspath $(DEMO_DIR))/outputs \
	    $(DEMO_PARAMS) $$(cat $(DEMO_DIR)/schedule.params) -P overlay_images=$(DEMO_OVERLAYS)
	@echo
	@echo "make demo took $$(( $$(date +%s) - $$(cat $(DEMO_DIR)/.started) )) s (budget: $(DEMO_MINUTES) min)."
	@echo "Demo run stored in $(DEMO_TRACKING_URI) (artifacts in $(DEMO_DIR)/artifacts)."
	@echo "Open the UI:  make demo-ui   (then http://127.0.0.1:5000)"

demo-ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri $(DEMO_TRACKING_URI) --host 127.0.0.1 --port 5000 --workers 1

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b --quick || exit 1; done

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
