"""`mlflow-anf` command line: a thin click group; each subcommand group lives beside the code it drives.

Subcommand groups are imported only when invoked (``mlflow-anf --help`` stays fast, ``mlflow-anf snapshot list``
imports no MLflow, Kubernetes or Azure SDK). A module adds its group with one line in :data:`_COMMANDS`; groups whose
module is not installed are left out of ``--help``.

Exit codes (every subcommand, see :func:`exit_code_for`): 0 ok, 1 verify found problems, 2 usage or bad input
(including a name that already exists), 3 not found, 4 provider/API error, 5 timeout.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

import click

from mlflow_anf.extras import MissingExtraError
from mlflow_anf.progress import Step, for_cli, quiet_option
from mlflow_anf.snapshots import available_providers
from mlflow_anf.snapshots.base import (
    Snapshot,
    SnapshotError,
    SnapshotExists,
    SnapshotNotFound,
    SnapshotTimeout,
    VerifyResult,
)


class ExitCode(IntEnum):
    OK = 0
    VERIFY_FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    PROVIDER_ERROR = 4
    TIMEOUT = 5


EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 verify found problems, 2 usage or bad input, 3 not found, 4 provider/API error, 5 timeout."
)

# name -> ("module:attribute" of a click command, one-line help)
_COMMANDS: dict[str, tuple[str, str]] = {
    "snapshot": ("mlflow_anf.cli:snapshot", "Create, list, show, restore, delete and verify snapshots."),
    "volume": ("mlflow_anf.cli_volume:volume", "Azure NetApp Files volumes: service level, revert, restore, show."),
    "render": ("mlflow_anf.backend.cli:render", "Render the Kubernetes manifests of a training job."),
    "doctor": ("mlflow_anf.backend.cli:doctor", "Check cluster, storage and MLflow set-up."),
    "reproduce": ("mlflow_anf.cli_reproduce:reproduce", "Re-run a logged run from its snapshots."),
    "diff": ("mlflow_anf.cli_reproduce:diff", "Compare two runs: params, code, data digests, metrics."),
}

_OUTPUT_KEY = "mlflow-anf:output"  # key in click's context meta


def exit_code_for(exc: BaseException) -> ExitCode:
    """The documented exit code for an error raised by a subcommand."""
    if isinstance(exc, (SnapshotTimeout, TimeoutError)):
        return ExitCode.TIMEOUT
    if isinstance(exc, (SnapshotNotFound, FileNotFoundError)):
        return ExitCode.NOT_FOUND
    if isinstance(exc, (SnapshotExists, ValueError, click.UsageError, MissingExtraError)):
        return ExitCode.USAGE
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")
    if mlflow_exceptions is not None and isinstance(exc, mlflow_exceptions.MlflowException):
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return ExitCode.NOT_FOUND
        if exc.error_code == "INVALID_PARAMETER_VALUE":
            return ExitCode.USAGE
    return ExitCode.PROVIDER_ERROR


def _module_available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, (target, _) in _COMMANDS.items() if _module_available(target.split(":")[0]))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target[0].split(":")
        if not _module_available(module_name):
            raise click.UsageError(f"'{cmd_name}' is not available in this installation ({module_name} is missing)")
        command = getattr(importlib.import_module(module_name), attr, None)
        if not isinstance(command, click.Command):
            raise click.UsageError(f"'{cmd_name}' is not available in this installation ({target[0]} is missing)")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - every error leaves with its documented exit code
            code = exit_code_for(exc)
            expected = isinstance(exc, (SnapshotError, ValueError, LookupError, OSError, MissingExtraError))
            if not expected and code is ExitCode.PROVIDER_ERROR:  # a bug or an SDK surprise: keep the traceback
                click.echo(traceback.format_exc(), err=True)
            _fail(ctx, (str(exc) or type(exc).__name__) + _store_hint(exc, code), code)


def _store_hint(exc: BaseException, code: ExitCode) -> str:
    """For a run (or experiment) MLflow did not find: which tracking store was asked, and where to point it."""
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")
    if code is not ExitCode.NOT_FOUND or mlflow_exceptions is None:
        return ""
    if not isinstance(exc, mlflow_exceptions.MlflowException):
        return ""
    import mlflow

    from mlflow_anf.secrets import redact_text

    return (f" (tracking store {redact_text(mlflow.get_tracking_uri())}; set MLFLOW_TRACKING_URI to the one that "
            "has the run)")


def _fail(ctx: click.Context, message: str, code: ExitCode) -> None:
    if ctx.find_root().meta.get(_OUTPUT_KEY) == "json":
        click.echo(json.dumps({"error": message, "exit_code": int(code)}, indent=2))
    click.echo(f"Error: {message}", err=True)
    ctx.exit(int(code))


@click.group(cls=_LazyGroup, epilog=EXIT_CODES_HELP)
@click.version_option(package_name="mlflow-anf")
def main() -> None:
    """Reproducible distributed training on Kubernetes from storage snapshots, tracked in MLflow."""


# --------------------------------------------------------------------------------------------- option helpers
def _parse_pairs(values: Sequence[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint=option)
        out[key.strip()] = val
    return out


def load_provider_config(path: Path) -> dict[str, Any]:
    """Read provider options from a JSON or YAML mapping; errors name the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror}", param_hint="--provider-config") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"{path}:{exc.lineno}: {exc.msg}", param_hint="--provider-config") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            # only the parser's short description: the full text can quote the offending line, which may hold a secret
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise click.BadParameter(f"{where}: {problem}", param_hint="--provider-config") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise click.BadParameter(f"{path}: expected a mapping of option: value", param_hint="--provider-config")
    return dict(data)


def _provider_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--provider, --option, --provider-config and --output, shared by every snapshot subcommand."""
    func = click.option(
        "--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True,
        help="Human table, or JSON for scripts.",
    )(func)  # fmt: skip
    func = click.option(
        "--provider-config", type=click.Path(path_type=Path, dir_okay=False),
        help="Provider options from a JSON or YAML file (--option values override them).",
    )(func)  # fmt: skip
    func = click.option(
        "--option", "options", multiple=True, metavar="KEY=VALUE",
        help="A provider option (repeatable), e.g. --option root=/data for local.",
    )(func)  # fmt: skip
    func = click.option(
        "--provider", type=click.Choice(available_providers()), default=None,
        help="Snapshot provider  [default: local]",
    )(func)  # fmt: skip
    return func


def _provider(provider: str | None, options: Sequence[str], provider_config: Path | None,
              step: Step | None = None) -> Any:
    from mlflow_anf.snapshots import get_provider

    merged = load_provider_config(provider_config) if provider_config else {}
    merged.update(_parse_pairs(options, "--option"))
    if step is not None:
        merged.update(progress_options(provider or "local", step))
    return get_provider(provider or "local", **merged)


def progress_options(provider: str, step: Step) -> dict[str, Any]:
    """``{"progress": callback}`` for a provider whose options take one (csi: each phase of a VolumeSnapshot; anf:
    the state of each ARM operation), shown as the step's description; ``{}`` for the others."""
    from mlflow_anf.snapshots import provider_class

    if not step.shown:
        return {}
    config_model = getattr(provider_class(provider), "Config", None)
    if config_model is None or "progress" not in getattr(config_model, "model_fields", {}):
        return {}
    return {"progress": lambda event: step.describe(str(event))}


def _file_progress(prov: Any, step: Step, what: str) -> dict[str, Any]:
    """``{"progress": callback}`` for a provider whose ``create`` counts the files it captures (local)."""
    import inspect

    if not step.shown or "progress" not in inspect.signature(prov.create).parameters:
        return {}
    return {"progress": lambda files, _path: step.describe(f"{what}: {files} files")}


class TrackingServerUnreachable(ConnectionError):
    """The tracking URI names an HTTP server that does not answer."""


def check_tracking_server(timeout_s: float = 5.0) -> None:
    """Fail at once, naming the URI and the fix, when MLflow's tracking URI is an HTTP server nobody answers at:
    MLflow's client retries a refused connection for minutes (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, 7 with backoff)
    before it says anything. Any HTTP answer (even 401/404) or a TLS error counts as an answer: MLflow deals with
    those itself."""
    import ssl
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit, urlunsplit

    import mlflow

    from mlflow_anf.secrets import redact_text

    uri = mlflow.get_tracking_uri()
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host + (f":{parts.port}" if parts.port else "")  # never the credentials of user:password@host
    health = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    try:
        with urllib.request.urlopen(health, timeout=timeout_s):  # noqa: S310 - the user's own tracking URI
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLError):
            return
        raise TrackingServerUnreachable(
            f"tracking server {redact_text(uri)} does not answer ({reason}); start it (mlflow server --host 0.0.0.0 "
            "--port 5000 ...) or set MLFLOW_TRACKING_URI to the server that has your runs"
        ) from None


def _set_output(output: str) -> None:
    click.get_current_context().find_root().meta[_OUTPUT_KEY] = output


# ------------------------------------------------------------------------------------------------- rendering
def _snapshot_dict(snap: Snapshot) -> dict[str, Any]:
    return {**snap.model_dump(mode="json"), "ref": snap.ref}


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _short_digest(digest: str | None) -> str:
    if not digest:
        return "-"
    algo, _, hexpart = digest.rpartition(":")
    return f"{algo + ':' if algo else ''}{hexpart[:12]}"


def _cell(value: Any) -> str:
    """A table cell: a value with a newline or another control character is shown JSON-quoted, so it cannot forge
    rows of the table."""
    text = str(value)
    return text if text.isprintable() else json.dumps(text)


def _table(rows: list[list[str]], header: list[str]) -> str:
    rows = [[_cell(c) for c in r] for r in rows]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _snapshot_rows(snaps: list[Snapshot], with_volume: bool) -> str:
    header = (["VOLUME"] if with_volume else []) + ["NAME", "CREATED", "FILES", "SIZE", "DIGEST", "LABELS"]
    rows = []
    for s in snaps:
        row = [s.volume] if with_volume else []
        row += [
            s.name,
            s.created.strftime("%Y-%m-%d %H:%M:%S"),
            str(s.details.get("files", "-")),
            _human_bytes(s.size_bytes),
            _short_digest(s.digest) if s.ready else "NOT READY",
            ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) or "-",
        ]
        rows.append(row)
    return _table(rows, header)


def _show_text(snap: Snapshot) -> str:
    fields: list[tuple[str, Any]] = [
        ("ref", snap.ref), ("provider", snap.provider), ("volume", snap.volume), ("name", snap.name),
        ("id", snap.id), ("created", snap.created.isoformat()), ("ready", snap.ready),
        ("digest", snap.digest or "-"), ("size", _human_bytes(snap.size_bytes)),
    ]  # fmt: skip
    fields += [(f"label {k}", v) for k, v in sorted(snap.labels.items())]
    fields += [(k, v) for k, v in snap.details.items()]
    width = max(len(k) for k, _ in fields)
    return "\n".join(f"{_cell(k).ljust(width)}  {_cell(v)}" for k, v in fields)


def _emit(output: str, data: Any, text: str) -> None:
    click.echo(json.dumps(data, indent=2) if output == "json" else text)


# -------------------------------------------------------------------------------------------------- snapshot
@click.group(epilog=EXIT_CODES_HELP)
def snapshot() -> None:
    """Point-in-time copies of volumes: local directories, Kubernetes PVCs (csi) or Azure NetApp Files (anf)."""


@snapshot.command("create", epilog=EXIT_CODES_HELP)
@click.option("--volume", required=True, help="Volume to snapshot (local: a directory).")
@click.option("--name", help="Snapshot name (DNS-1123). Default: snap-<UTC timestamp>.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Label to store (repeatable).")
@click.option("--run-id", help="Also record the snapshot on this MLflow run (tags, and a dataset input for data).")
@click.option("--role", type=click.Choice(["data", "model"]), help="Role on the run  [default: data]")
@_provider_options
@quiet_option
def create_command(
    volume: str, name: str | None, labels: tuple[str, ...], run_id: str | None, role: str | None,
    provider: str | None, options: tuple[str, ...], provider_config: Path | None, output: str, quiet: bool,
) -> None:  # fmt: skip
    """Snapshot a volume."""
    _set_output(output)
    if role and not run_id:
        raise click.UsageError("--role needs --run-id")
    label_map = _parse_pairs(labels, "--label")
    if run_id:
        check_tracking_server()
    what = f"snapshot {volume}"
    with for_cli(quiet).step(what) as step:
        prov = _provider(provider, options, provider_config, step)
        if run_id:
            from mlflow_anf.tracking import snapshot_and_log

            snap = snapshot_and_log(prov, volume, role or "data", run_id=run_id, labels=label_map, name=name)
        else:
            snap = prov.create(volume, name, labels=label_map, **_file_progress(prov, step, what))
    logged = f"\nlogged to run {run_id} as {role or 'data'}" if run_id else ""
    skipped = [_cell(p) for p in snap.details.get("skipped") or []]
    if skipped:  # fifos, sockets, devices: nothing to keep, but never silently
        logged += f"\nskipped {len(skipped)} special file(s) (fifo, socket or device; not captured): "
        logged += ", ".join(skipped)
    _emit(output, _snapshot_dict(snap), f"created {snap.ref}  digest {snap.digest or '-'}{logged}")


@snapshot.command("list", epilog=EXIT_CODES_HELP)
@click.option("--volume", help="Volume whose snapshots to list (local: required unless --option root=DIR).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Only snapshots with this label.")
@_provider_options
def list_command(
    volume: str | None, labels: tuple[str, ...], provider: str | None, options: tuple[str, ...],
    provider_config: Path | None, output: str,
) -> None:  # fmt: skip
    """List snapshots, oldest first."""
    _set_output(output)
    prov = _provider(provider, options, provider_config)
    snaps = prov.list(volume, labels=_parse_pairs(labels, "--label"))
    text = _snapshot_rows(snaps, with_volume=volume is None) if snaps else "no snapshots"
    _emit(output, [_snapshot_dict(s) for s in snaps], text)


@snapshot.command("show", epilog=EXIT_CODES_HELP)
@click.option("--volume", required=True)
@click.argument("name")
@_provider_options
def show_command(
    volume: str, name: str, provider: str | None, options: tuple[str, ...], provider_config: Path | None, output: str
) -> None:
    """Show one snapshot."""
    _set_output(output)
    snap = _provider(provider, options, provider_config).get(volume, name)
    _emit(output, _snapshot_dict(snap), _show_text(snap))


@snapshot.command("restore", epilog=EXIT_CODES_HELP)
@click.option("--volume", help="Volume the snapshot belongs to (with NAME).")
@click.argument("name", required=False)
@click.option("--run-id", help="Restore the snapshot an MLflow run recorded instead of --volume/NAME.")
@click.option("--role", type=click.Choice(["data", "model"]), default="data", show_default=True)
@click.option("--target", required=True, help="New volume to create (local: a new or empty directory).")
@click.option("--no-verify", is_flag=True, help="Skip checking content against the manifest (local).")
@_provider_options
@quiet_option
def restore_command(
    volume: str | None, name: str | None, run_id: str | None, role: str, target: str, no_verify: bool,
    provider: str | None, options: tuple[str, ...], provider_config: Path | None, output: str, quiet: bool,
) -> None:  # fmt: skip
    """Materialise a snapshot as a new, writable volume."""
    _set_output(output)
    if bool(run_id) == bool(volume and name):
        raise click.UsageError("give either --volume and NAME, or --run-id")
    if run_id:
        check_tracking_server()
    source = f"run {run_id} ({role})" if run_id else f"{volume}@{name}"
    with for_cli(quiet).step(f"restore {source} to {target}") as step:
        if run_id:
            from mlflow_anf.tracking import restore

            merged = load_provider_config(provider_config) if provider_config else {}
            merged.update(_parse_pairs(options, "--option"))
            # Without --provider the run's tags name the provider; the options still apply to it.
            prov = _provider(provider, options, provider_config, step) if provider else None
            new_volume = restore(
                run_id, target, role=role, provider=prov, provider_options=merged, verify=not no_verify
            )
        else:
            prov = _provider(provider, options, provider_config, step)
            snap = prov.get(volume, name)
            new_volume = prov.restore(snap, target, verify=not no_verify)
            source = snap.ref
    _emit(output, {"source": source, "target": new_volume}, f"restored {source} to {new_volume}")


@snapshot.command("delete", epilog=EXIT_CODES_HELP)
@click.option("--volume", required=True)
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_provider_options
def delete_command(
    volume: str, name: str, yes: bool, provider: str | None, options: tuple[str, ...], provider_config: Path | None,
    output: str,
) -> None:  # fmt: skip
    """Delete a snapshot."""
    _set_output(output)
    prov = _provider(provider, options, provider_config)
    snap = prov.get(volume, name)
    if not yes and not click.confirm(f"delete snapshot {snap.ref}?", default=False, err=True):
        raise click.UsageError("not deleted (confirm, or pass --yes)")
    prov.delete(volume, name)
    _emit(output, {"deleted": snap.ref}, f"deleted {snap.ref}")


@snapshot.command("verify", epilog=EXIT_CODES_HELP)
@click.option("--volume", required=True)
@click.argument("name")
@_provider_options
def verify_command(
    volume: str, name: str, provider: str | None, options: tuple[str, ...], provider_config: Path | None, output: str
) -> None:
    """Check a snapshot against its manifest; exit 1 if anything changed."""
    _set_output(output)
    prov = _provider(provider, options, provider_config)
    snap = prov.get(volume, name)
    result: VerifyResult = prov.verify(snap)
    text = f"{snap.ref}: {'ok' if result.ok else 'PROBLEMS'} ({result.checked} entries checked)"
    if result.problems:
        text += "\n" + "\n".join(f"  {p}" for p in result.problems)
    _emit(output, {"ref": snap.ref, **result.model_dump(mode="json")}, text)
    if not result.ok:
        click.get_current_context().exit(int(ExitCode.VERIFY_FAILED))


if __name__ == "__main__":  # pragma: no cover
    main()
