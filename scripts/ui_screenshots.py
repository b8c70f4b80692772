#!/usr/bin/env python
"""Screenshots of what the MLflow UI shows of a run's lineage, as a team sees it: PostgreSQL-backed ``mlflow server``
with proxied artifacts (started from k8s/mlflow/server.yaml's command, args and store URI), three tiny lanedet
training runs, the model registered, the UI in headless Chromium.

    python scripts/ui_screenshots.py OUT_DIR [--workdir DIR] [--keep]

The runs: ``same-data-1`` and ``same-data-2`` train on one volume ``data-a/tusimple`` that does not change between
them (two snapshots, byte-identical content: one dataset in MLflow); ``other-data`` trains on ``data-b/tusimple``,
made with another seed (same dataset name, another digest). The model of ``same-data-1`` is registered as
``lanedet``. Screenshots (PNG) in OUT_DIR:

* ``run.png``: the run page of ``same-data-1`` (its dataset, the ``mlflow_anf.data.*`` params, the grouped tags);
* ``compare.png``: the compare view of ``same-data-1`` and ``other-data`` (both digests side by side);
* ``logged-model.png``: the logged-model page of ``same-data-1``'s model (test metrics, "Datasets used");
* ``model-version.png``: the registered version ``lanedet`` 1;
* ``datasets.png``: the experiment's runs with their Datasets column;

and ``scenario.json`` (ids, URLs, digests, the text each page showed). Needs Debian's ``postgresql`` and
``chromium`` (``make setup-system``) and the Python ``playwright`` package (dev extra; it drives /usr/bin/chromium,
no browser download). tests/test_ui_lineage.py runs the same scenario and asserts through MLflow's API what the
screenshots show.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the repository's tests.support helpers
    sys.path.insert(0, str(REPO))

from tests.support.kubelet_env import container_env  # noqa: E402
from tests.support.postgres import PostgresServer, free_port  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: MLflow 3.18's UI opens an "MLflow Assistant" side panel over a third of the page on a first visit from localhost;
#: these are the local-storage flags its useLocalStorage hook keeps (``<key>_v<version>``, JSON values; keys
#: mlflow.assistant.fab.autoOpenedOnFirstLoad and mlflow.assistant.panelOpen in the bundled main.*.js)
QUIET_ASSISTANT = """
try {
  localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
  localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
} catch (e) {}
"""
EXPERIMENT = "lanedet-lineage"
MODEL_NAME = "lanedet"
# one short epoch of the CPU backbone on a few frames: seconds, not minutes
TINY = ["--epochs", "1", "--backbone", "resnet18_lite", "--input-size", "64x128", "--batch-size", "4",
        "--val-batch-size", "4", "--num-workers", "0", "--overlays", "0"]


# ------------------------------------------------------------------------------------------- the tracking server
def server_manifest() -> dict[str, Any]:
    """The ``mlflow`` container of k8s/mlflow/server.yaml's Deployment."""
    docs = list(yaml.safe_load_all((REPO / "k8s" / "mlflow" / "server.yaml").read_text()))
    deployment = next(d for d in docs if d and d["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]


def server_command(container: dict[str, Any], port: int, artifacts: Path) -> list[str]:
    """The container's command and args, with what a pod gets from its surroundings replaced by this machine's:
    the listen address and port, and the artifacts volume's mount path (``--artifacts-destination``). One worker:
    the machine is small."""
    argv = [sys.executable, "-m", "mlflow", *container["command"][1:]]
    for arg in container["args"]:
        if arg.startswith("--host="):
            arg = "--host=127.0.0.1"
        elif arg.startswith("--port="):
            arg = f"--port={port}"
        elif arg.startswith("--artifacts-destination="):
            arg = f"--artifacts-destination={artifacts}"
        argv.append(arg)
    return [*argv, "--workers", "1"]


@dataclass
class TrackingServer:
    uri: str
    store_uri_form: str  # the manifest's value before expansion
    artifacts: Path
    proc: subprocess.Popen[bytes]
    log: Path


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server not healthy after {timeout_s}s:\n{log.read_text()[-4000:]}")


@contextmanager
def tracking_server(pg: PostgresServer, workdir: Path) -> Iterator[TrackingServer]:
    """``mlflow server`` as k8s/mlflow/server.yaml runs it: its env expanded as the kubelet does (the Secret's
    password, the database host and port of *pg*), its args, proxied artifacts into ``workdir/artifacts``."""
    container = server_manifest()
    env_form = {e["name"]: e.get("value") for e in container["env"]}
    given = {"MLFLOW_DB_PASSWORD": pg.password, "MLFLOW_DB_HOST": pg.host, "MLFLOW_DB_PORT": str(pg.port)}
    expanded = container_env(container, given)
    port = free_port()
    artifacts = workdir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    log = workdir / "mlflow-server.log"
    env = {**os.environ, **expanded, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with log.open("wb") as out:
        proc = subprocess.Popen(server_command(container, port, artifacts), env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = TrackingServer(f"http://127.0.0.1:{port}", env_form["MLFLOW_BACKEND_STORE_URI"], artifacts, proc, log)
    try:
        _wait_healthy(server.uri, proc, log)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()


# ------------------------------------------------------------------------------------------------ the scenario
@dataclass
class Scenario:
    tracking_uri: str
    experiment_id: str = ""
    runs: dict[str, str] = field(default_factory=dict)  # run name -> run id
    models: dict[str, str] = field(default_factory=dict)  # run name -> logged model id
    version: str = ""
    pages: dict[str, str] = field(default_factory=dict)  # screenshot name -> URL
    texts: dict[str, str] = field(default_factory=dict)  # screenshot name -> the page's text


def make_data(root: Path, seed: int) -> Path:
    """A tiny prepared TuSimple-format dataset (synthetic frames, the package's real label geometry)."""
    from mlflow_anf_lanedet.data.prepare import prepare
    from mlflow_anf_lanedet.synth import generate

    generate(root / "download", frames=12, seed=seed)
    prepare(root / "download", root / "tusimple")
    shutil.rmtree(root / "download")
    return root / "tusimple"


def train(tracking_uri: str, data: Path, out: Path, run_name: str) -> str:
    """``lanedet train`` (its own run, in experiment EXPERIMENT) on *data*, as a user runs it; the run is then named
    *run_name*. Returns the run id."""
    from mlflow import MlflowClient

    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
           "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "project"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "mlflow_anf_lanedet.cli", "train", "--data-dir", str(data), "--output-dir",
           str(out), *TINY]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"lanedet train ({run_name}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    client.update_run(run.info.run_id, name=run_name)
    return run.info.run_id


def build_scenario(tracking_uri: str, workdir: Path) -> Scenario:
    """Three runs (two on unchanged data, one on other data) and the first one's model registered."""
    from mlflow import MlflowClient

    from mlflow_anf.tracking import tag_model_version

    client = MlflowClient(tracking_uri)
    scenario = Scenario(tracking_uri)
    data_a = make_data(workdir / "data-a", seed=3)
    data_b = make_data(workdir / "data-b", seed=11)
    for name, data in (("same-data-1", data_a), ("same-data-2", data_a), ("other-data", data_b)):
        run_id = train(tracking_uri, data, workdir / "out" / name, name)
        scenario.runs[name] = run_id
        outputs = client.get_run(run_id).outputs
        scenario.models[name] = outputs.model_outputs[0].model_id  # the logged model of lanedet's export
    scenario.experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    first = scenario.models["same-data-1"]
    client.create_registered_model(MODEL_NAME)
    version = client.create_model_version(MODEL_NAME, f"models:/{first}", run_id=scenario.runs["same-data-1"],
                                          model_id=first)
    scenario.version = str(version.version)
    tag_model_version(MODEL_NAME, scenario.version, client)  # the version page shows tags, not metrics
    return scenario


# --------------------------------------------------------------------------------------------------- the browser
def page_urls(s: Scenario) -> dict[str, str]:
    """The UI's routes (MLflow 3's hash router, mlflow/server/js/src/experiment-tracking/routes.ts)."""
    base, exp = s.tracking_uri, s.experiment_id
    compare = [s.runs["same-data-1"], s.runs["other-data"]]
    query = urllib.parse.urlencode({"runs": json.dumps(compare), "experiments": json.dumps([exp])})
    return {
        "run": f"{base}/#/experiments/{exp}/runs/{s.runs['same-data-1']}",
        "compare": f"{base}/#/compare-runs?{query}",
        "logged-model": f"{base}/#/experiments/{exp}/models/{s.models['same-data-1']}",
        "model-version": f"{base}/#/models/{MODEL_NAME}/versions/{s.version}",
        "datasets": f"{base}/#/experiments/{exp}/runs",
    }


def screenshots(s: Scenario, out: Path, wait_for: dict[str, list[str]] | None = None,
                only: list[str] | None = None) -> None:
    """Open each page (*only* these, if given) in headless Chromium, wait until it shows what it must (*wait_for*:
    texts per page, else network idle), save ``<name>.png`` (full page) and keep the page's text in ``s.texts``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    s.pages = page_urls(s)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            # tall: the UI scrolls inside its own panes, so a "full page" picture is the viewport
            context = browser.new_context(viewport={"width": 1600, "height": 2000})
            context.add_init_script(QUIET_ASSISTANT)
            for name, url in s.pages.items():
                if only is not None and name not in only:
                    continue
                page = context.new_page()  # a fresh tab each: the routes differ only after '#'
                page.goto(url, wait_until="load", timeout=90_000)
                for text in (wait_for or {}).get(name, []):
                    page.get_by_text(text, exact=False).first.wait_for(timeout=60_000)
                if name in PAGE_ACTIONS:
                    PAGE_ACTIONS[name](page)
                with contextlib.suppress(PlaywrightTimeout):  # the UI polls; idle is a courtesy, not a must
                    page.wait_for_load_state("networkidle", timeout=10_000)
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                s.texts[name] = page.inner_text("body")
                page.close()
        finally:
            browser.close()


def _diff_only(page: Any) -> None:
    """Compare view: "Show diff only" of the Parameters table (the first of the two switches), so the rows that
    differ - the data - are what the table shows."""
    page.get_by_role("switch").first.click()
    page.wait_for_timeout(500)


def _open_tags(page: Any) -> None:
    """Model version page: its Tags section unfolded (it opens by itself where the version has tags)."""
    header = page.get_by_role("button", name="Tags", exact=True).first
    if header.get_attribute("aria-expanded") == "false":
        header.click()
        page.wait_for_timeout(500)


PAGE_ACTIONS = {"compare": _diff_only, "model-version": _open_tags}


def expected_texts(s: Scenario, digests: dict[str, str]) -> dict[str, list[str]]:
    """What each page must show: the digests of the data snapshots, the test accuracy."""
    return {
        "run": [digests["same-data-1"]],
        "compare": [digests["same-data-1"], digests["other-data"]],
        "logged-model": ["test_accuracy", digests["same-data-1"]],
        "model-version": ["Source Model", "mlflow_anf.dataset"],
        "datasets": ["tusimple"],
    }


def run_digests(s: Scenario) -> dict[str, str]:
    """Each run's data snapshot dataset digest, from the run's dataset input."""
    from mlflow import MlflowClient

    from mlflow_anf.tracking import run_dataset

    client = MlflowClient(s.tracking_uri)
    return {name: run_dataset(client.get_run(run_id))[1] for name, run_id in s.runs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the PNGs and scenario.json")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ui-screenshots-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with PostgresServer() as pg, tracking_server(pg, workdir) as server:
            scenario = build_scenario(server.uri, workdir)
            digests = run_digests(scenario)
            screenshots(scenario, args.out, expected_texts(scenario, digests))
            report = {**asdict(scenario), "digests": digests, "store_uri_form": server.store_uri_form}
            (args.out / "scenario.json").write_text(json.dumps(report, indent=2) + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"screenshots in {args.out}: " + ", ".join(sorted(p.name for p in args.out.glob("*.png"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
