"""`lanedet` command line: a thin click group; each subcommand lives beside the code it drives.

Subcommands are imported only when invoked, so `lanedet --help` stays fast and `lanedet eval` does not import torch.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click.Command
_COMMANDS = {
    "prepare": ("mlflow_anf_lanedet.data.prepare:prepare_command",
                "Unpack/validate a TuSimple download into a prepared root."),
    "synth": ("mlflow_anf_lanedet.synth:synth_command", "Write a synthetic TuSimple-format dataset."),
    "train": ("mlflow_anf_lanedet.train:train_command", "Train SCNN with PyTorch Lightning, tracked in MLflow."),
    "evaluate": ("mlflow_anf_lanedet.train:evaluate_command", "Predict on a split with a trained model and score it."),
    "budget": ("mlflow_anf_lanedet.budget:budget_command", "Measure this machine and fit epochs to a time budget."),
    "eval": ("mlflow_anf_lanedet.metric:eval_command",
             "Score a prediction file against ground truth (official TuSimple metric)."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target[0].split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup)
@click.version_option(package_name="mlflow-anf")
def main() -> None:
    """SCNN lane detection on TuSimple."""


if __name__ == "__main__":  # pragma: no cover
    main()
