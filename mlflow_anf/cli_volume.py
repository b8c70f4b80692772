"""``mlflow-anf volume``: Azure NetApp Files volume operations (service level, revert, restore, show).

A thin CLI over :class:`~mlflow_anf.snapshots.anf.AnfVolumes` (the provider's :attr:`volumes`); only ``restore`` also
uses the snapshot provider, to look the snapshot up.

Options mirror ``mlflow-anf snapshot`` (:mod:`mlflow_anf.cli`): ``--provider-config FILE`` (JSON or YAML mapping of
:class:`~mlflow_anf.snapshots.anf.AnfConfig` fields), ``--option KEY=VALUE`` (repeatable, overrides the file), validated
by the provider registry, whose errors name the option but never echo its value; ``--output/-o table|json``. Exit codes
(``mlflow_anf.cli.exit_code_for``): 0 ok, 2 bad input / refused, 3 not found, 4 ARM error, 5 timeout. With
``-o json`` results and errors (``{"error": ..., "exit_code": n}``) are one JSON object on stdout.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml

from mlflow_anf.progress import Step, for_cli, quiet_option

if TYPE_CHECKING:
    from mlflow_anf.snapshots.anf import AnfSnapshotProvider

EPILOG = "Exit codes: 0 ok, 2 bad input or refused, 3 not found, 4 ARM/API error, 5 timeout."


def _parse_pairs(values: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            # never repeat the value: it may be a secret typed in the wrong place
            raise click.BadParameter("expected KEY=VALUE (no '=' or an empty key)", param_hint="--option")
        out[key.strip()] = val
    return out


def build_provider(options: Sequence[str], provider_config: Path | None,
                   step: Step | None = None) -> AnfSnapshotProvider:
    """The ``anf`` provider from ``--provider-config`` and ``--option`` values (options win); *step* shows the state
    of its ARM operations."""
    from mlflow_anf.cli import load_provider_config, progress_options
    from mlflow_anf.snapshots import get_provider

    merged: dict[str, Any] = load_provider_config(provider_config) if provider_config else {}
    merged.update(_parse_pairs(options))
    if step is not None:
        merged.update(progress_options("anf", step))
    return get_provider("anf", **merged)  # type: ignore[return-value]


def _emit(output: str, payload: Mapping[str, Any], text: str) -> None:
    click.echo(json.dumps(payload, indent=2, sort_keys=True, default=str) if output == "json" else text)


def _command(fn: Callable[..., None]) -> Callable[..., None]:
    """Shared options (--option, --provider-config, --output) and the error → exit-code mapping."""

    @click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True,
                  help="Human text, or JSON for scripts.")
    @click.option("--provider-config", type=click.Path(path_type=Path, dir_okay=False), default=None,
                  help="ANF provider options from a JSON or YAML file (--option values override them).")
    @click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
                  help="An ANF provider option (repeatable), e.g. --option subscription_id=... --option pool=premium")
    @quiet_option
    @functools.wraps(fn)
    def wrapper(options: tuple[str, ...], provider_config: Path | None, output: str, quiet: bool,
                **kwargs: Any) -> None:
        from mlflow_anf.cli import exit_code_for
        from mlflow_anf.extras import MissingExtraError
        from mlflow_anf.snapshots.anf import redact
        from mlflow_anf.snapshots.base import SnapshotError

        ctx = click.get_current_context()
        try:
            with for_cli(quiet).step(f"volume {ctx.info_name}") as step:
                fn(provider=build_provider(options, provider_config, step), output=output, **kwargs)
        except click.ClickException:
            raise
        except (SnapshotError, ValueError, LookupError, OSError, MissingExtraError) as exc:
            code = int(exit_code_for(exc))
            message = redact(str(exc) or type(exc).__name__)
            if output == "json":
                click.echo(json.dumps({"error": message, "exit_code": code}, indent=2))
            click.echo(f"Error: {message}", err=True)
            ctx.exit(code)

    return wrapper


def _parse_snapshot_ref(ref: str) -> tuple[str, str]:
    body = ref[4:] if ref.startswith("anf:") else ref
    volume, sep, name = body.rpartition("@")
    if not sep or not volume or not name:
        raise click.BadParameter(f"{ref!r} is not 'pool/volume@snapshot' (or 'volume@snapshot')", param_hint="SNAPSHOT")
    return volume, name


def _fmt_time(t: Any) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC") if t is not None else "?"


@click.group("volume", epilog=EPILOG)
def volume() -> None:
    """Azure NetApp Files volumes: change service level, revert to a snapshot, restore to a new volume, show."""


@volume.command("set-service-level", epilog=EPILOG)
@click.argument("volume_id", metavar="VOLUME")
@click.option("--pool", "target_pool", required=True, help="capacity pool to move the volume to")
@click.option("--wait", is_flag=True, help="wait until ARM reports the move finished")
@click.option("--trident-backend", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="TridentBackendConfig YAML (or backend JSON): for a Trident-managed volume, check that the target "
                   "pool is one of its capacity pools")
@_command
def set_service_level(provider: AnfSnapshotProvider, output: str, volume_id: str, target_pool: str,
                      wait: bool, trident_backend: Path | None) -> None:
    """Move VOLUME to the capacity pool TARGET_POOL (its service level changes; data stays, mounts keep working).

    A volume Trident manages (a PV's volume) is not moved: Trident would go on addressing it in its old pool and
    every later CSI snapshot of the PV would fail. The command then exits 2 with the steps that keep Trident working.
    """
    from mlflow_anf.snapshots.anf.trident import backend_pools

    backend = None
    if trident_backend is not None:
        try:
            backend = backend_pools(yaml.safe_load(trident_backend.read_text()))
        except yaml.YAMLError as err:
            raise click.BadParameter(f"not YAML/JSON: {err}", param_hint="--trident-backend") from None
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--trident-backend") from None
    result = provider.volumes.change_service_level(volume_id, target_pool, wait=wait, trident_backend=backend)
    gib = 1024**3
    text = (
        f"{'moved' if result.status == 'succeeded' else 'moving'} {result.volume} → {result.new_volume}: "
        f"{result.from_service_level} → {result.to_service_level} "
        f"(quota {result.volume_quota_bytes // gib} GiB; target pool had {result.target_free_bytes // gib} GiB free)"
        + ("" if result.status == "succeeded" else "\nstarted; check with: mlflow-anf volume show " + result.new_volume)
    )
    _emit(output, {"pool_change": result.model_dump(mode="json")}, text)


@volume.command("revert", epilog=EPILOG)
@click.argument("volume_id", metavar="VOLUME")
@click.argument("snapshot")
@click.option("--confirm", default=None, metavar="VOLUME",
              help="the volume's name again; required because the revert destroys data")
@click.option("--wait/--no-wait", default=True, show_default=True)
@_command
def revert(provider: AnfSnapshotProvider, output: str, volume_id: str, snapshot: str, confirm: str | None,
           wait: bool) -> None:
    """Revert VOLUME in place to SNAPSHOT. Prints what is lost: newer snapshots and every write since SNAPSHOT."""
    from mlflow_anf.snapshots.anf import parse_volume_id

    ref = parse_volume_id(volume_id, provider.config)
    plan = provider.volumes.plan_revert(volume_id, snapshot)
    lost = plan.snapshots_lost
    lines = [
        f"reverting anf:{plan.volume} to {plan.snapshot} (taken {_fmt_time(plan.snapshot_created)}) destroys:",
        f"  - all data written to {plan.volume} since {_fmt_time(plan.data_lost_since)}",
        f"  - {len(lost)} newer snapshot(s){':' if lost else ''}",
        *[f"      {s.name}  ({_fmt_time(s.created)})" for s in lost],
        *[f"  ! {w}" for w in plan.warnings],
    ]
    if confirm not in (ref.volume, ref.id):
        from mlflow_anf.cli import ExitCode

        code = int(ExitCode.USAGE)
        message = f"refusing to revert {plan.volume}: pass --confirm {ref.volume} to accept this loss (nothing changed)"
        if output == "json":
            click.echo(json.dumps({"error": message, "exit_code": code, "revert_plan": plan.model_dump(mode="json")},
                                  indent=2))
        else:
            click.echo("\n".join(lines), err=True)
        click.echo(f"Error: {message}", err=True)
        click.get_current_context().exit(code)
    done = provider.volumes.revert(volume_id, snapshot, confirm=confirm, wait=wait)
    lines.append("reverted." if done.status == "succeeded" else "revert started.")
    _emit(output, {"revert": done.model_dump(mode="json")}, "\n".join(lines))


@volume.command("restore", epilog=EPILOG)
@click.argument("snapshot", metavar="SNAPSHOT")
@click.option("--to", "target", required=True, metavar="NEW_VOLUME", help="name (or pool/name) of the new volume")
@click.option("--pool", default=None, help="capacity pool of the new volume (default: the source volume's)")
@click.option("--size-gib", type=int, default=None, help="quota of the new volume (default: the source's)")
@click.option("--wait/--no-wait", default=True, show_default=True)
@_command
def restore(provider: AnfSnapshotProvider, output: str, snapshot: str, target: str, pool: str | None,
            size_gib: int | None, wait: bool) -> None:
    """Create NEW_VOLUME from SNAPSHOT ('pool/volume@name'), copying the source volume's network and export setup."""
    from mlflow_anf.snapshots.anf.names import check_new_volume, new_volume_ref, parse_volume_id

    volume_id, name = _parse_snapshot_ref(snapshot)
    source_pool = parse_volume_id(volume_id, provider.config, field="SNAPSHOT").pool
    check_new_volume(new_volume_ref(target, provider.config, pool=pool, default_pool=source_pool))  # before any call
    snap = provider.get(volume_id, name)
    new_id = provider.volumes.restore(snap, target, pool=pool, size_gib=size_gib, wait=wait)
    _emit(output, {"restored": {"snapshot": snap.ref, "volume": new_id, "waited": wait}},
          f"{'restored' if wait else 'restoring'} {snap.ref} → new volume {new_id}")


@volume.command("show", epilog=EPILOG)
@click.argument("volume_id", metavar="VOLUME")
@_command
def show(provider: AnfSnapshotProvider, output: str, volume_id: str) -> None:
    """Show VOLUME: state, service level, quota, mount target, snapshots and its pool's free capacity."""
    info = provider.volumes.describe_volume(volume_id)
    gib = 1024**3

    def g(n: int | None) -> str:
        return "?" if n is None else f"{n / gib:,.0f} GiB"

    latest = info.latest_snapshot
    text = "\n".join([
        f"volume      {info.id}  ({info.provisioning_state})",
        f"arm id      {info.arm_id}",
        f"service     {info.service_level}, quota {g(info.quota_bytes)}, {', '.join(info.protocol_types) or '-'}",
        f"mount       {', '.join(f'{ip}:/{info.creation_token}' for ip in info.mount_ips) or '-'}",
        f"pool        {info.pool}: {g(info.pool_size_bytes)}, {g(info.pool_free_bytes)} unallocated",
        f"snapshots   {info.snapshot_count}"
        + (f", latest {latest.name} ({_fmt_time(latest.created)})" if latest else ""),
    ] + ([f"restored    from snapshot {info.restored_from_snapshot}"] if info.restored_from_snapshot else []))
    _emit(output, {"volume": info.model_dump(mode="json")}, text)
