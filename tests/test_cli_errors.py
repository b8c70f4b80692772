"""The first errors a user meets name the field or file and say what to do next (issue #15, part 2)."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflow_anf.cli import TrackingServerUnreachable, check_tracking_server, main
from tests.conftest import REPO_ROOT
from tests.support.http_server import serve


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on leaving: nothing listens there


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering_server() -> Iterator[http.server.ThreadingHTTPServer]:
    yield from serve(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound))


def test_a_tracking_server_nobody_answers_at_fails_at_once_naming_it(tmp_path: Path) -> None:
    """MLflow's client would retry the refused connection for minutes before saying anything."""
    uri = f"http://alice:s3cr3t-passw0rd@127.0.0.1:{_closed_port()}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    for args in (["snapshot", "restore", "--run-id", "abc", "--target", str(tmp_path / "t")], ["diff", "a", "b"],
                 ["reproduce", "abc"]):
        proc = subprocess.run([sys.executable, "-m", "mlflow_anf.cli", *args], capture_output=True, text=True,
                              env=env, timeout=120, stdin=subprocess.DEVNULL)
        assert proc.returncode == 4, proc.stderr[-2000:]
        assert "does not answer" in proc.stderr and "set MLFLOW_TRACKING_URI" in proc.stderr
        assert "127.0.0.1" in proc.stderr and "s3cr3t-passw0rd" not in proc.stderr
        assert "Traceback" not in proc.stderr


def test_any_http_answer_counts_as_a_running_server(monkeypatch: pytest.MonkeyPatch, answering_server) -> None:
    host, port = answering_server.server_address[:2]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://{host}:{port}")
    check_tracking_server()  # a 404 for /health is still a server: MLflow reports what it says
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://{host}:{_closed_port()}")
    with pytest.raises(TrackingServerUnreachable, match="Connection refused"):
        check_tracking_server()


def test_a_run_not_found_names_the_tracking_store_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = _runner().invoke(main, ["snapshot", "restore", "--run-id", "0123abc", "--target", str(tmp_path / "t")])
    assert result.exit_code == 3, result.stderr
    assert f"tracking store sqlite:///{tmp_path / 'mlflow.db'}; set MLFLOW_TRACKING_URI" in result.stderr


def test_no_kubeconfig_says_where_to_point_it(tmp_path: Path) -> None:
    result = _runner().invoke(main, ["snapshot", "list", "--provider", "csi", "--volume", "lane/data",
                                     "--option", f"kubeconfig={tmp_path / 'kubeconfig'}"])
    assert result.exit_code == 4, result.stderr
    assert f"kubeconfig: no file at '{tmp_path / 'kubeconfig'}'" in result.stderr
    assert "--option kubeconfig=PATH" in result.stderr and "$KUBECONFIG" in result.stderr


def test_train_without_a_prepared_root_says_how_to_make_one(tmp_path: Path) -> None:
    from mlflow_anf_lanedet.train import train_command

    for data_dir in (tmp_path / "missing", tmp_path):
        result = CliRunner().invoke(train_command, ["--data-dir", str(data_dir), "--epochs", "1"])
        assert result.exit_code == 2, result.output
        assert f"--data-dir: {data_dir} is not" in result.output
        assert "lanedet prepare --src TUSIMPLE_DOWNLOAD --out DIR" in result.output
        assert "lanedet synth --out DIR" in result.output


def test_prepare_of_a_missing_download_says_what_src_is(tmp_path: Path) -> None:
    from mlflow_anf_lanedet.data.prepare import prepare_command

    result = CliRunner().invoke(prepare_command, ["--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "source is not a directory (give --src the folder of the TuSimple download" in result.output
