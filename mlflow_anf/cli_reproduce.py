"""``mlflow-anf reproduce RUN_ID`` and ``mlflow-anf diff RUN_A RUN_B``: thin click wrappers of
:mod:`mlflow_anf.reproduce`.

Exit codes (as every ``mlflow-anf`` command): 0 ok; 1 the reproduction finished but differs from its source (or,
with ``diff --exit-code``, the runs differ); 2 refused (code changed, bad option); 3 the snapshot, code version,
image or run is gone; 4 the reproduction failed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mlflow_anf.cli import ExitCode, _fail, _parse_pairs, _set_output, check_tracking_server, load_provider_config
from mlflow_anf.progress import for_cli, quiet_option

REPRODUCE_EXIT_HELP = (
    "Exit codes: 0 reproduced (or submitted), 1 finished but its metrics or data differ from the run's, 2 refused "
    "(code changed, bad option), 3 the run, snapshot, code version or image is gone, 4 the reproduction failed."
)
DIFF_EXIT_HELP = "Exit codes: 0 ok (with --exit-code: the runs match), 1 they differ (--exit-code), 3 a run is gone."

_METRIC_FMT = "{:.10g}"


def _fmt_metric(value: float | None) -> str:
    return "-" if value is None else _METRIC_FMT.format(value)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


_MARK = {"same": "", "differs": "*", "only_a": "<", "only_b": ">", "rewritten": "~", "unknown": "?"}


def _cell(value: str | None, width: int = 60) -> str:
    text = "-" if value is None else value
    return text if len(text) <= width else text[: width - 1] + "…"


def render_diff(d: Any, show_all: bool = False) -> str:
    """Human text of a :class:`~mlflow_anf.reproduce.RunDiff`: one table per section, differences marked ``*``."""
    a, b = d.a, d.b
    out = [f"A  {a.run_id}  {a.name}  {a.status}  {a.start_time or ''}".rstrip(),
           f"B  {b.run_id}  {b.name}  {b.status}  {b.start_time or ''}".rstrip()]
    if b.reproduces == a.run_id:
        out.append("B reproduces A")
    elif a.reproduces == b.run_id:
        out.append("A reproduces B")

    def section(title: str, rows: list[Any]) -> None:
        shown = [r for r in rows if show_all or r.status != "same"]
        hidden = len(rows) - len(shown)
        out.append("")
        out.append(f"{title}" + (f" ({hidden} identical not shown; --all shows them)" if hidden else ""))
        if shown:
            out.append(_table([[_MARK[r.status], r.key, _cell(r.a), _cell(r.b)] for r in shown],
                              ["", "KEY", "A", "B"]))
        elif not rows:
            out.append("  (none recorded)")

    section("params", d.params)
    section("code", d.code)
    if d.image:
        section("image", d.image)
    section("data", d.data)
    section("packages", d.packages)

    out.append("")
    timing = [m for m in d.metrics if m.timing]
    model = [m for m in d.metrics if not m.timing]
    out.append("metrics")
    if model:
        out.append(_table(
            [[_MARK[m.status], m.key, _fmt_metric(m.a), _fmt_metric(m.b),
              "" if m.delta in (None, 0.0) else f"{m.delta:+.3g}"] for m in model],
            ["", "KEY", "A", "B", "DELTA"],
        ))
    if timing:
        if show_all:
            out.append("timing/system metrics (never expected to match)")
            out.append(_table([[m.key, _fmt_metric(m.a), _fmt_metric(m.b)] for m in timing], ["KEY", "A", "B"]))
        else:
            out.append(f"({len(timing)} timing/system metrics not compared; --all shows them)")

    s = d.summary

    def word(v: bool | None) -> str:
        return "unknown" if v is None else ("same" if v else "DIFFERENT")

    out.append("")
    out.append(f"summary: params {word(s.params)}, code {word(s.code)}, data {word(s.data)}, "
               f"metrics {word(s.metrics)} -> {'reproduced' if s.reproduced else 'NOT reproduced'}")
    out.append("legend: * differs  ~ rewritten by the reproduction (restored volume)  < only in A  > only in B")
    return "\n".join(out)


def _result_text(r: Any) -> str:
    lines = [f"source run:   {r.source_run_id}", f"entry point:  {r.entry_point} ({r.backend} backend)",
             f"project:      {r.project_dir}", f"code:         {r.code}"]
    if r.image:
        lines.append(f"image:        {r.image}")
    if r.restored:
        lines.append(f"data:         {r.restored['source']} -> {r.restored['volume']}")
    for key, change in r.rewritten.items():
        lines.append(f"rewritten:    {key}: {change['from']} -> {change['to']}")
    for key, value in r.overrides.items():
        lines.append(f"override:     {key}={value}")
    for note in r.notes:
        lines.append(f"note:         {note}")
    if r.run_id:
        lines.append(f"reproduction: {r.run_id} ({r.status})")
    elif r.status == "RESTORED":
        lines.append("restored only; nothing was run")
    if r.comparison is not None:
        s = r.comparison.summary
        differing = [m.key for m in r.comparison.metrics if not m.timing and m.status != "same"]
        verdict = "identical final metrics" if s.metrics else f"metrics DIFFER: {', '.join(differing)}"
        data = {True: "same data digest", False: "data digest DIFFERS", None: "data digest not comparable"}[s.data]
        lines.append(f"result:       {verdict}; {data}")
    return "\n".join(lines)


def _json_or_file(value: str | None, option: str) -> dict[str, Any]:
    if not value:
        return {}
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value)
        if path.suffix.lower() in (".yaml", ".yml"):
            return load_provider_config(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"{path}: {exc.strerror}", param_hint=option) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"line {exc.lineno} column {exc.colno}: {exc.msg}", param_hint=option) from None
    if not isinstance(data, dict):
        raise click.BadParameter("expected a JSON object", param_hint=option)
    return data


@click.command("reproduce", epilog=REPRODUCE_EXIT_HELP)
@click.argument("run_id")
@click.option("-P", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Override a param (repeatable; recorded on the new run).")
@click.option("--backend", type=click.Choice(["local", "mpijob"]), help="Backend  [default: the run's own]")
@click.option("--backend-config", help="JSON (or a .json/.yaml file) merged over the recorded backend config.")
@click.option("--project-dir", type=click.Path(file_okay=False, path_type=Path),
              help="MLproject directory  [default: the recorded one]")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="local: directory for the restored data/ and the new outputs/  [default: ./reproductions/<id>]")
@click.option("--target", help="Name of the restored volume (local: a directory; csi: a PVC; anf: POOL/VOLUME).")
@click.option("--restored", help="Use this already restored volume instead of restoring again.")
@click.option("--restore-only", is_flag=True, help="Restore the data snapshot, print the new volume, run nothing.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Snapshot provider option (repeatable)  [default: the recorded ones]")
@click.option("--provider-config", type=click.Path(path_type=Path, dir_okay=False),
              help="Snapshot provider options from a JSON or YAML file.")
@click.option("--allow-code-change", is_flag=True,
              help="Run even if the code differs from the run's (the difference is recorded).")
@click.option("--skip-image-check", is_flag=True, help="mpijob: do not ask the registry whether the image exists.")
@click.option("--wait/--no-wait", default=None, help="mpijob: wait for the job to end  [default: no-wait]")
@click.option("--experiment-id", help="Experiment of the new run  [default: the source run's]")
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
@quiet_option
def reproduce(
    run_id: str, params: tuple[str, ...], backend: str | None, backend_config: str | None,
    project_dir: Path | None, workdir: Path | None, target: str | None, restored: str | None, restore_only: bool,
    options: tuple[str, ...], provider_config: Path | None, allow_code_change: bool, skip_image_check: bool,
    wait: bool | None, experiment_id: str | None, output: str, quiet: bool,
) -> None:  # fmt: skip
    """Re-run RUN_ID from its snapshots: restore its data snapshot to a new volume, run the same entry point with
    the same params through the same backend, and link both runs (tag mlflow_anf.reproduces)."""
    from mlflow_anf.reproduce import ReproduceError, ReproduceOptions
    from mlflow_anf.reproduce import reproduce as run_reproduce

    _set_output(output)
    provider_options = load_provider_config(provider_config) if provider_config else {}
    provider_options.update(_parse_pairs(options, "--option"))
    opts = ReproduceOptions(
        backend=backend, backend_config=_json_or_file(backend_config, "--backend-config"),
        overrides=_parse_pairs(params, "--param"), project_dir=project_dir, workdir=workdir, target=target,
        restored=restored, restore_only=restore_only, provider_options=provider_options,
        allow_code_change=allow_code_change, image_check=not skip_image_check, wait=wait,
        experiment_id=experiment_id,
    )
    say = (lambda msg: click.echo(msg, err=True)) if output == "json" else click.echo
    ctx = click.get_current_context()
    check_tracking_server()
    try:
        result = run_reproduce(run_id, opts, say=say, progress=for_cli(quiet))
    except ReproduceError as exc:
        _fail(ctx, str(exc), ExitCode(exc.exit_code))
        return
    if output == "json":
        click.echo(json.dumps({**result.model_dump(mode="json"), "identical": result.identical}, indent=2))
    else:
        click.echo(_result_text(result))
    if result.identical is False:
        ctx.exit(int(ExitCode.VERIFY_FAILED))


@click.command("diff", epilog=DIFF_EXIT_HELP)
@click.argument("run_a")
@click.argument("run_b")
@click.option("--all", "show_all", is_flag=True, help="Also show identical rows and timing/system metrics.")
@click.option("--ignore-metric", "ignore_metrics", multiple=True, metavar="PATTERN",
              help="Metric name pattern not expected to match (repeatable)  [default: timing and system/*]")
@click.option("--exit-code", "exit_code", is_flag=True, help="Exit 1 when the runs differ (like git diff).")
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
def diff(run_a: str, run_b: str, show_all: bool, ignore_metrics: tuple[str, ...], exit_code: bool,
         output: str) -> None:
    """Compare two runs: params, code version, image, data digests, package versions and metrics side by side."""
    from mlflow_anf.reproduce import TIMING_METRICS, ReproduceError, diff_runs

    _set_output(output)
    ctx = click.get_current_context()
    check_tracking_server()
    try:
        result = diff_runs(run_a, run_b, ignore_metrics=ignore_metrics or TIMING_METRICS)
    except ReproduceError as exc:
        _fail(ctx, str(exc), ExitCode(exc.exit_code))
        return
    if output == "json":
        click.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        click.echo(render_diff(result, show_all))
    s = result.summary
    if exit_code and not (s.params and s.metrics and s.code is not False and s.data is not False):
        ctx.exit(int(ExitCode.VERIFY_FAILED))
