"""`lanedet synth`: the click adapter over `generate` (bad input -> usage error, exit status 2, nothing written)."""

from __future__ import annotations

from pathlib import Path

import click

from mlflow_anf.progress import for_cli, quiet_option

from .config import SynthError


@click.command("synth")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Dataset root to create.")
@click.option("--frames", type=click.IntRange(min=3), required=True, help="Frames over train+val+test (>= 3).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True, help="Same seed, same bytes.")
@click.option(
    "--labels",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Real TuSimple label_data JSON lines the lane geometry comes from "
         "[default: the packaged labels of clips 0313].",
)
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True, help="Rendering processes.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True)  # fmt: skip
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True)  # fmt: skip
@quiet_option
def synth_command(
    out: Path,
    frames: int,
    seed: int,
    labels: Path | None,
    overwrite: bool,
    workers: int,
    val_fraction: float,
    test_fraction: float,
    quiet: bool,
) -> None:
    """Write a synthetic TuSimple-format dataset (official download layout) under --out."""
    from .writer import generate

    try:
        report = generate(
            out, frames, seed, labels=labels, overwrite=overwrite, workers=workers, val_fraction=val_fraction,
            test_fraction=test_fraction, progress=for_cli(quiet),
        )  # fmt: skip
    except SynthError as exc:
        raise click.UsageError(str(exc)) from None
    counts = ", ".join(f"{name} {n}" for name, n in report.counts.items())
    click.echo(f"wrote {report.frames} frames to {report.out} ({counts}) in {report.seconds:.1f} s, "
               f"{report.frames_per_s:.1f} frames/s")  # fmt: skip
