"""Saving a monitor's recording to a folder and loading it back, bit for bit.

A save is a folder of two files: `tensors-<sha256>.safetensors` holds every tensor the monitor
recorded, copied to the host, named by its SHA-256; `monitor.json` holds the rest (format
version, configuration, labels), names the tensors file with its digest, and carries the
SHA-256 of its own content (`json_sha256`), so a hand edit is refused as corruption. What is
saved is whatever the recording's parts declare (`record.registry`): the tensors of part `p`
are `p.<tensor>`, and `parts[p]` in the JSON is its meta. A save replaces the previous one
atomically (`save_files.replace_save`): a failed save leaves the previous one loadable.

Loading checks before it builds anything: the JSON's digest and every value's type and bounds;
the tensors file's digest; then every tensor's shape and dtype, read from the file's header,
against what a throwaway recording on the `meta` device (which allocates nothing) expects of
that JSON; only then are the tensors read, and their values checked (counts not negative,
indices in range). Nothing is unpickled. Saves of format version 1 (one JSON key per part) are
read through `format_v1`; versions 1 and 2 kept the tensors in `tensors.safetensors` and no
digest of the JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
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
from ..record.registry import MAX_COUNT, StateRegistry
from ..stats.kernels import StatisticsKernels
from . import format_v1
from .format_v1 import check_types
from .save_files import (
    JSON_FILE,
    LEGACY_TENSORS_FILE,
    TENSORS_NAME,
    folder_lock,
    replace_save,
    sha256_of,
    tensor_specs,
)

Tensor = torch.Tensor

FORMAT = "featmon_widget.monitor"
# 4: the per-feature distributions (part "distributions"; the old "values" part empty) and
#    the sample of activating tokens (`record/samples.py`); older saves load both empty;
# 3: tensors named by digest, the JSON's own digest (atomic replace); 2: each part of the
# recorded state saved under its name (`parts`); 1: one key per part.
FORMAT_VERSION = 4
# The JSON holds names and labels only; anything larger was not written by us.
MAX_JSON_BYTES = 1 << 30
MAX_D_SAE = 2**31 - 1

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
    def read_from(self) -> int:
        """The format version the save was written in (an older one is read as the current)."""
        return int(self.meta.get("read_from_format_version", self.meta["format_version"]))

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


def save_folder(path: Any) -> Path:
    """`path` as a folder path; "" (which would mean the current directory) is refused."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"a save path must be a str or a path, got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text:
        raise ValueError(f"a save path must name a folder, got {cut(repr(text), 60)}")
    return Path(text)


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
    replaced atomically: a failed save leaves it loadable). Returns the folder."""
    folder = save_folder(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"save path {str(folder)!r} is a file; give a folder")
    folder.mkdir(parents=True, exist_ok=True)

    def document(name: str, digest: str) -> str:
        return json.dumps(signed({**saved.meta, "tensors_file": name, "tensors_sha256": digest}),
                          allow_nan=False)

    def write_tensors(target: Path) -> None:
        try:
            save_file(saved.tensors, str(target))
        except SafetensorError as exc:  # a full disk, a size limit: an OSError like any other
            raise OSError(f"could not write {target.name}: {cut(str(exc), 200)}") from exc

    replace_save(folder, write_tensors, document)
    return folder


def signed(meta: dict[str, Any]) -> dict[str, Any]:
    """`meta` with the SHA-256 of its own content (`json_sha256`, see `_json_digest`)."""
    return {**meta, "json_sha256": _json_digest(meta)}


def _json_digest(meta: dict[str, Any]) -> str:
    """The SHA-256 of `meta` without `json_sha256`, in one canonical spelling (sorted keys,
    no spaces), so any edit of a value changes it."""
    content = {k: v for k, v in meta.items() if k != "json_sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---- loading ----------------------------------------------------------------------------------


def read_save(path: str | Path) -> SavedMonitor:
    """The save in folder `path`, checked before anything is built from it (see module doc).
    A ValueError says what is wrong (a newer format, a corrupt file, a value out of range)."""
    folder = save_folder(path)
    json_path = folder / JSON_FILE
    with folder_lock(folder):
        if not json_path.is_file():
            raise FileNotFoundError(f"no featmon_widget save in {str(folder)!r} (expected "
                                    f"{JSON_FILE} and its tensors file)")
        raw = _read_json(json_path)
        tensors_path = folder / _tensors_file(raw, json_path)
        if not tensors_path.is_file():
            raise FileNotFoundError(f"no featmon_widget save in {str(folder)!r}: "
                                    f"{tensors_path.name} is missing")
        if sha256_of(tensors_path) != raw.get("tensors_sha256"):
            raise ValueError(f"{tensors_path} does not match the digest in {JSON_FILE}: the "
                             f"save is corrupt or was not finished")
        meta, specs = _current_layout(raw, tensor_specs(tensors_path), json_path)
        parts = _check_meta(SavedMonitor(meta, specs), json_path)
        try:
            tensors = load_file(str(tensors_path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{tensors_path} is not a readable safetensors file: "
                             f"{cut(str(exc), 200)}") from None
    _, tensors = _current_layout(raw, tensors, json_path)
    try:
        parts.check_values(tensors, meta["parts"])
        # The validated configuration's (a key left out of the JSON takes its default).
        _check_threshold(SavedMonitor(meta, specs).config.threshold, tensors)
    except ValueError as exc:
        raise ValueError(f"{tensors_path}: {cut(str(exc), 300)}") from None
    return SavedMonitor(meta, tensors)


def restore_recording(recording: Recording, saved: SavedMonitor) -> dict[int, str]:
    """Copy `saved` into a freshly made `recording` of the saved width and configuration;
    returns the saved labels. Every part checks its tensors and meta before the first is
    loaded, so a bad save raises a ValueError and leaves `recording` as it was."""
    metas = saved.meta["parts"]
    parts = recording.state_parts().held_by(saved.read_from, metas)
    parts.check(saved.tensors, metas)
    parts.check_values(saved.tensors, metas)
    labels = load_labels(saved.meta["labels"], recording.d_sae)
    parts.load(saved.tensors, metas)
    recording.device_fixed = recording.device_fixed or bool(saved.meta["device_fixed"])
    return labels


# ---- checks -----------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ValueError(f"{path} is larger than {MAX_JSON_BYTES} bytes: not a featmon save")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
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
    if version >= 3 and meta.get("json_sha256") != _json_digest(meta):
        raise ValueError(f"{path} does not match its own digest (json_sha256): it was edited "
                         f"or damaged after it was saved, so the save is corrupt")
    return meta


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a number a save holds", name, 0)


def _tensors_file(meta: dict[str, Any], path: Path) -> str:
    """The name of the tensors file `meta` names (checked: no other path)."""
    if meta["format_version"] < 3:
        return LEGACY_TENSORS_FILE
    name, digest = meta.get("tensors_file"), meta.get("tensors_sha256")
    match = TENSORS_NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None or match.group(1) != digest:
        raise ValueError(f"{path}: tensors_file {cut(repr(name), 80)} is not the file named by "
                         f"the tensors' digest: the save is corrupt")
    return name


def _current_layout(meta: dict[str, Any], tensors: dict[str, Tensor],
                    path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The document and tensors in the current layout (a version-1 save is renamed)."""
    if meta["format_version"] != 1:
        return meta, tensors
    try:
        return format_v1.upgraded(meta, tensors, FORMAT_VERSION)
    except ValueError as exc:
        raise ValueError(f"{path}: {cut(str(exc), 300)}") from None


def _check_meta(saved: SavedMonitor, path: Path) -> StateRegistry:
    """Every value of the document (types and bounds), and every tensor's shape and dtype
    (`saved.tensors` may be `meta` tensors: only shapes are read) against what the parts of
    a recording of that configuration expect. That recording is made on the `meta` device,
    so nothing is allocated; its parts are returned, to check the values once read."""
    meta = saved.meta
    try:
        check_types(meta, _META_TYPES)
        _check_bounds(meta)
        config = saved.config
        load_labels(meta["labels"], saved.d_sae)
        recording = Recording(saved.d_sae, config, torch.device("meta"),
                              StatisticsKernels(False, False))
        parts = recording.state_parts().held_by(saved.read_from, meta["parts"])
        parts.check(saved.tensors, meta["parts"], known_only=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {cut(str(exc), 300)}") from None
    return parts


def _check_threshold(threshold: float, tensors: dict[str, torch.Tensor]) -> None:
    """The statistics agree with the saved threshold (an edit of it with the digest recomputed
    would load numbers that contradict it): a feature counted active has its maximum above the
    threshold; and, while every token was counted under this threshold (no change since the
    reset), a feature has a value at or below it exactly when not all of its values were
    active. Both are exact: the kernels compare each value with the threshold as numbers, and
    min / max are those values."""
    count, active = tensors.get("stats.count"), tensors.get("stats.active_count")
    low, high = tensors.get("stats.min"), tensors.get("stats.max")
    if any(t is None for t in (count, active, low, high)):
        return  # a save without these statistics (a part this version does not hold)
    seen = count > 0
    wrong = seen & (active > 0) & ~(high > threshold)
    tokens, active_tokens = tensors.get("totals.tokens"), tensors.get("totals.active_tokens")
    if tokens is not None and active_tokens is not None and int(tokens) == int(active_tokens):
        wrong |= seen & ((active < count) != (low <= threshold))
    if bool(wrong.any()):
        feature = int(wrong.nonzero()[0, 0])
        raise ValueError(
            f"the statistics contradict the saved threshold {threshold!r} (feature {feature}: "
            f"{int(active[feature])} of {int(count[feature])} values active, min "
            f"{float(low[feature])!r}, max {float(high[feature])!r}): the save is corrupt")


def _check_bounds(meta: dict[str, Any]) -> None:
    """The document's own numbers and names in range (each part checks its own meta)."""
    if not 1 <= meta["d_sae"] <= MAX_D_SAE:
        raise ValueError(f"d_sae must be in 1..{MAX_D_SAE}, got {cut(repr(meta['d_sae']), 40)}")
    if not 0 <= meta["next_automatic"] <= MAX_COUNT:
        raise ValueError(f"next_automatic must be in 0..{MAX_COUNT}, got "
                         f"{cut(repr(meta['next_automatic']), 40)}")
    saved_at = meta.get("saved_at", 0.0)
    if not (isinstance(saved_at, (int, float)) and not isinstance(saved_at, bool)
            and math.isfinite(saved_at)):
        raise ValueError(f"saved_at must be a finite time, got {cut(repr(saved_at), 40)}")
    if not (meta.get("sae_id") is None or isinstance(meta["sae_id"], str)):
        raise ValueError(f"sae_id must be text or null, got {cut(repr(meta['sae_id']), 40)}")
    device = meta["device"]
    try:
        parsed = torch.device(device) if len(device) <= 64 else None
    except (RuntimeError, ValueError, TypeError):
        parsed = None
    if parsed is None or parsed.type == "meta":
        raise ValueError(f"device {cut(repr(device), 40)} is not a device a monitor records on")


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
    return sha256_of(path)


def _package_version() -> str:
    try:
        return version("featmon_widget")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"
