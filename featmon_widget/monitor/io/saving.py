"""Saving a monitor's recording to a folder and loading it back, bit for bit.

A save is a folder of two files: `tensors.safetensors` holds every tensor the monitor recorded,
copied to the host; `monitor.json` holds the rest (format version, configuration, labels) and
the SHA-256 of the tensors file. What is saved is whatever the recording's parts declare
(`record.registry`): the tensors of part `p` are `p.<tensor>`, and `parts[p]` in the JSON is
its meta (request names, counters, which request each per-request tensor belongs to). The JSON
is written last, so a folder whose tensors do not match that digest was not finished, or was
changed afterwards: loading says so. Nothing is unpickled; every part checks its tensors
against the shapes and dtypes the saved configuration gives before anything is copied into a
monitor. Saves of format version 1 (one JSON key per part) are read through `format_v1`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ...checks import cut, is_int
from ..config import MonitorConfig
from ..query.labels import load_labels
from ..record.recording import Recording
from . import format_v1
from .format_v1 import check_types

Tensor = torch.Tensor

FORMAT = "featmon_widget.monitor"
# 2: each part of the recorded state saved under its name (`parts`); 1: one key per part.
FORMAT_VERSION = 2
TENSORS_FILE = "tensors.safetensors"
JSON_FILE = "monitor.json"
# The JSON holds names and labels only; anything larger was not written by us.
MAX_JSON_BYTES = 1 << 30

# Keys of the JSON document (beyond the format's own) and the types they must have.
_META_TYPES: dict[str, type | tuple[type, ...]] = {
    "d_sae": int, "device": str, "device_fixed": bool, "config": dict, "next_automatic": int,
    "parts": dict, "labels": dict,
}


class SavedMonitor(NamedTuple):
    """A save read from disk and checked: its JSON document and its tensors (on the host), in
    the current format whatever format it was written in."""

    meta: dict[str, Any]
    tensors: dict[str, Tensor]

    @property
    def d_sae(self) -> int:
        """The saved monitor's width."""
        return int(self.meta["d_sae"])

    @property
    def config(self) -> MonitorConfig:
        """The saved configuration, validated."""
        return MonitorConfig().replace(self.d_sae, **self.meta["config"])

    def device_here(self) -> torch.device | None:
        """Where to load: the saved device when this machine has it, else the CPU; None when
        the saved monitor had not chosen one yet (it follows its first activations)."""
        if not self.meta["device_fixed"]:
            return None
        device = torch.device(self.meta["device"])
        if device.type == "cpu" or _available(device):
            return device
        return torch.device("cpu")


# ---- saving -----------------------------------------------------------------------------------


def recording_state(recording: Recording, next_automatic: int, labels: dict[int, str],
                    sae_id: str | None) -> SavedMonitor:
    """Host copies of everything `recording` holds (callers hold the monitor's lock; the
    files are written afterwards, from these copies)."""
    if recording.device.type == "meta":
        raise ValueError("a monitor on the meta device holds no values to save")
    tensors, parts = recording.state_parts().state()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "written_by": f"featmon_widget {_package_version()}",
        "saved_at": time.time(),
        "d_sae": recording.d_sae,
        "device": str(recording.device),
        "device_fixed": recording.device_fixed,
        "config": _config_json(recording.config),
        "next_automatic": next_automatic,
        "parts": parts,
        "labels": {str(f): text for f, text in sorted(labels.items())},
        "sae_id": sae_id,
    }
    return SavedMonitor(meta, {name: _host_copy(t) for name, t in tensors.items()})


def write_save(saved: SavedMonitor, path: str | Path) -> Path:
    """Write `saved` into the folder `path` (made if missing; an earlier save there is
    replaced). Returns the folder."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"save path {str(folder)!r} is a file; give a folder")
    folder.mkdir(parents=True, exist_ok=True)
    tensors_path, json_path = folder / TENSORS_FILE, folder / JSON_FILE
    partial = folder / f".{TENSORS_FILE}.{os.getpid()}.partial"
    save_file(saved.tensors, str(partial))
    digest = _sha256(partial)
    os.replace(partial, tensors_path)
    document = json.dumps({**saved.meta, "tensors_sha256": digest}, allow_nan=False)
    partial_json = folder / f".{JSON_FILE}.{os.getpid()}.partial"
    partial_json.write_text(document, encoding="utf-8")
    os.replace(partial_json, json_path)
    return folder


# ---- loading ----------------------------------------------------------------------------------


def read_save(path: str | Path) -> SavedMonitor:
    """The save in folder `path`, checked: its format version, the digest of its tensors, and
    its configuration. A ValueError says what is wrong (a newer format, a corrupt file)."""
    folder = Path(path)
    json_path, tensors_path = folder / JSON_FILE, folder / TENSORS_FILE
    if not json_path.is_file() or not tensors_path.is_file():
        raise FileNotFoundError(f"no featmon_widget save in {str(folder)!r} (expected "
                                f"{JSON_FILE} and {TENSORS_FILE})")
    meta = _read_json(json_path)
    if _sha256(tensors_path) != meta.get("tensors_sha256"):
        raise ValueError(f"{tensors_path} does not match the digest in {JSON_FILE}: the save "
                         f"is corrupt or was not finished")
    try:
        tensors = load_file(str(tensors_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{tensors_path} is not a readable safetensors file: "
                         f"{cut(str(exc), 200)}") from None
    if meta["format_version"] == 1:
        try:
            meta, tensors = format_v1.upgraded(meta, tensors, FORMAT_VERSION)
        except ValueError as exc:
            raise ValueError(f"{json_path}: {cut(str(exc), 300)}") from None
    saved = SavedMonitor(meta, tensors)
    _check_meta(saved, json_path)
    return saved


def restore_recording(recording: Recording, saved: SavedMonitor) -> dict[int, str]:
    """Copy `saved` into a freshly made `recording` of the saved width and configuration;
    returns the saved labels. Every part checks its tensors and meta before the first is
    loaded, so a bad save raises a ValueError and leaves `recording` as it was."""
    parts, metas = recording.state_parts(), saved.meta["parts"]
    parts.check(saved.tensors, metas)
    labels = load_labels(saved.meta["labels"], recording.d_sae)
    parts.load(saved.tensors, metas)
    recording.device_fixed = recording.device_fixed or bool(saved.meta["device_fixed"])
    return labels


# ---- checks -----------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ValueError(f"{path} is larger than {MAX_JSON_BYTES} bytes: not a featmon save")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path} is not valid JSON ({cut(str(exc), 120)}): the save is "
                         f"corrupt") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a featmon_widget monitor save (format "
                         f"{cut(repr(meta.get('format') if isinstance(meta, dict) else meta), 60)}"
                         f", expected {FORMAT!r})")
    version = meta.get("format_version")
    if not is_int(version) or version < 1:
        raise ValueError(f"{path}: format_version must be a positive int, got "
                         f"{cut(repr(version), 60)}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} was saved in format version {version} by "
                         f"{cut(str(meta.get('written_by')), 60)}; this featmon_widget "
                         f"{_package_version()} reads format version {FORMAT_VERSION} and "
                         f"older: upgrade featmon_widget to load it")
    return meta


def _check_meta(saved: SavedMonitor, path: Path) -> None:
    """The document's own keys; each part's meta is checked by the part, on loading."""
    meta = saved.meta
    try:
        check_types(meta, _META_TYPES)
        if meta["d_sae"] < 1 or meta["next_automatic"] < 0:
            raise ValueError("d_sae or next_automatic out of range")
        saved.config  # noqa: B018 - validates the configuration
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {cut(str(exc), 300)}") from None


def _available(device: torch.device) -> bool:
    backend = getattr(torch, device.type, None)
    try:
        count = backend.device_count() if backend is not None else 0
    except Exception:  # a backend that cannot even count its devices is not usable
        return False
    return count > (device.index or 0)


def _config_json(config: MonitorConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(config).items()}


def _host_copy(tensor: Tensor) -> Tensor:
    """A host copy that later device writes cannot change (a CPU tensor is cloned)."""
    return tensor.detach().to("cpu", copy=True).contiguous()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _package_version() -> str:
    try:
        return version("featmon_widget")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"
