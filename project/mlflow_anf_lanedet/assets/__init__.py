"""Real TuSimple data shipped with the package, in a compact lossless form (see README.md beside this file).

A TuSimple label file is JSON lines ``{"lanes": [[x, ...], ...], "h_samples": [...], "raw_file": ..., ...}`` with
integer x (``-2`` = no point). :func:`encode_label_lines` stores a file whose lines all share one ``h_samples`` grid
and one lane count as ``int16`` arrays in an ``.npz`` (3.5 MB of JSON -> about 0.4 MB); :func:`decode_label_lines`
gives the records back and :func:`write_label_lines` the original bytes (checked against the sha256 in the archive).

No import of this module reads anything: the files are opened when a function asks for them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

#: TuSimple's example labels of clips 0313-1/0313-2 (2,858 frames): the lane geometry the synthetic generator draws.
LABELS_0313 = "tusimple_label_data_0313.npz"

_FORMAT = "mlflow-anf/tusimple-label-lines/1"
_KEYS = ("lanes", "h_samples", "raw_file")  # key order of the official files; extra per-line keys are integers


class AssetError(ValueError):
    """A compact label file that is not what it says it is."""


def asset_path(name: str) -> Path:
    """The file *name* of this package's assets (a real path: the package is installed as files)."""
    path = Path(str(resources.files(__name__).joinpath(name)))
    if not path.is_file():
        raise AssetError(f"package asset {name} not found at {path} (a broken install? reinstall mlflow-anf-lanedet)")
    return path


def encode_label_lines(src: Path, dst: Path) -> None:
    """Write the JSON-lines label file *src* as a compact ``.npz`` at *dst* (atomically).

    Refuses files it could not give back byte for byte: lines that differ in ``h_samples``, lane count or keys, x
    outside ``int16``, or formatting other than ``json.dumps``'s.
    """
    raw = Path(src).read_bytes()
    lines = raw.decode("utf-8").splitlines()
    if not lines:
        raise AssetError(f"{src}: no label lines")
    records = [json.loads(line) for line in lines]
    extra = [k for k in records[0] if k not in _KEYS]
    grid = records[0]["h_samples"]
    for n, (rec, line) in enumerate(zip(records, lines), 1):
        if tuple(rec) != (*_KEYS, *extra) or rec["h_samples"] != grid or len(rec["lanes"]) != len(records[0]["lanes"]):
            raise AssetError(f"{src}:{n}: keys, h_samples or lane count differ from line 1")
        if json.dumps(rec) != line:
            raise AssetError(f"{src}:{n}: not formatted as json.dumps writes it; cannot be given back byte for byte")
    lanes = np.asarray([rec["lanes"] for rec in records], dtype=np.int64)
    if lanes.min() < np.iinfo(np.int16).min or lanes.max() > np.iinfo(np.int16).max:
        raise AssetError(f"{src}: x outside int16")
    arrays: dict[str, Any] = {
        "format": np.frombuffer(_FORMAT.encode(), dtype=np.uint8),
        "sha256": np.frombuffer(hashlib.sha256(raw).hexdigest().encode(), dtype=np.uint8),
        "trailing_newline": np.asarray(raw.endswith(b"\n")),
        "lanes": lanes.astype(np.int16),
        "h_samples": np.asarray(grid, dtype=np.int16),
        "raw_file": np.frombuffer("\n".join(rec["raw_file"] for rec in records).encode(), dtype=np.uint8),
        "extra_keys": np.frombuffer("\n".join(extra).encode(), dtype=np.uint8),
    }
    for key in extra:
        arrays[f"extra_{key}"] = np.asarray([rec[key] for rec in records], dtype=np.int64)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    dst = Path(dst)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.getvalue())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if decode_bytes(dst) != raw:  # the round trip is the contract
        dst.unlink()
        raise AssetError(f"{src}: the compact form does not give the file back byte for byte")


def _text(arr: np.ndarray) -> str:
    return arr.tobytes().decode("utf-8")


def _load(path: Path) -> tuple[list[dict[str, Any]], str, bool]:
    """The records of a compact label file (original key order), its recorded sha256 and trailing-newline flag."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if _text(z["format"]) != _FORMAT:
                raise AssetError(f"{path}: not a {_FORMAT} file")
            lanes = z["lanes"].astype(np.int64).tolist()
            grid = z["h_samples"].astype(np.int64).tolist()
            names = _text(z["raw_file"]).split("\n")
            extra = [k for k in _text(z["extra_keys"]).split("\n") if k]
            extras = {k: z[f"extra_{k}"].tolist() for k in extra}
            sha256, trailing = _text(z["sha256"]), bool(z["trailing_newline"])
    except (OSError, KeyError, ValueError) as exc:
        if isinstance(exc, AssetError):
            raise
        raise AssetError(f"{path}: not a compact label file ({exc})") from None
    if len(names) != len(lanes):
        raise AssetError(f"{path}: {len(names)} raw_file names for {len(lanes)} label lines")
    records = []
    for i, (lane_rows, name) in enumerate(zip(lanes, names)):
        rec: dict[str, Any] = {"lanes": lane_rows, "h_samples": list(grid), "raw_file": name}
        rec.update({k: v[i] for k, v in extras.items()})
        records.append(rec)
    return records, sha256, trailing


def decode_label_lines(path: Path) -> list[dict[str, Any]]:
    """The records of a compact label file, in the original key order."""
    return _load(path)[0]


def decode_bytes(path: Path) -> bytes:
    """The original file's bytes; :class:`AssetError` if they do not have the recorded sha256."""
    records, want, trailing = _load(path)
    raw = ("\n".join(json.dumps(rec) for rec in records) + ("\n" if trailing else "")).encode("utf-8")
    if hashlib.sha256(raw).hexdigest() != want:
        raise AssetError(f"{path}: decoded content does not match its recorded sha256 {want[:12]} (damaged file?)")
    return raw


def write_label_lines(path: Path, dst: Path) -> Path:
    """Write the original JSON-lines file of the compact *path* to *dst*; returns *dst*."""
    dst = Path(dst)
    dst.write_bytes(decode_bytes(path))
    return dst


def labels_0313_path() -> Path:
    """The packaged real labels of clips 0313 (the synthetic generator's default geometry source)."""
    return asset_path(LABELS_0313)
