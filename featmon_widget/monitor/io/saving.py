"""Saving a monitor's recording to a folder and loading it back, bit for bit.

A save is a folder of two files: `tensors.safetensors` holds every tensor the monitor recorded
(statistics, history ring, value histograms, examples, request positions and left contexts),
copied to the host; `monitor.json` holds the rest (format version, configuration, times, request
names, labels) and the SHA-256 of the tensors file. The JSON is written last, so a folder whose
tensors do not match that digest was not finished, or was changed afterwards: loading says so.
Nothing is unpickled; every tensor is checked against the shape and dtype the saved
configuration gives before anything is copied into a monitor.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections import OrderedDict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ...checks import cut, is_int
from ..config import MonitorConfig
from ..query.labels import load_labels
from ..record.recording import Recording, RemoteView
from ..record.requests import check_request_id
from ..stats.moments import Totals, empty_totals

Tensor = torch.Tensor

FORMAT = "featmon_widget.monitor"
FORMAT_VERSION = 1
TENSORS_FILE = "tensors.safetensors"
JSON_FILE = "monitor.json"
# The JSON holds names and labels only; anything larger was not written by us.
MAX_JSON_BYTES = 1 << 30
_POSITIONS, _TAILS = "positions/", "tails/"


class SavedMonitor(NamedTuple):
    """A save read from disk and checked: its JSON document and its tensors (on the host)."""

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
    tensors: dict[str, Tensor] = {}
    parts = {"stats": recording.stats, "history": recording.history,
             "examples": recording.examples}
    for part, owner in parts.items():
        for name, tensor in owner.state_tensors().items():
            tensors[f"{part}.{name}"] = tensor
    if recording.stats.remote is not None:  # the other ranks' part, as of the last sync
        tensors.update({f"remote.{n}": t for n, t in recording.stats.remote._asdict().items()})
    tensors["tokens"] = recording.tokens
    tensors["active_tokens"] = recording.active_tokens
    tensors.update({f"health.{n}": t for n, t in recording.health.state_tensors().items()})
    tensors["values.counts"] = recording.values.counts
    positions = recording.positions.tracked
    tails = recording.examples.tails
    for prefix, keyed in ((_POSITIONS, positions), (_TAILS, tails)):
        for i, tensor in enumerate(keyed.values()):
            tensors[f"{prefix}{i}"] = tensor
    host = {name: _host_copy(t) for name, t in tensors.items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "written_by": f"featmon_widget {_package_version()}",
        "saved_at": time.time(),
        "d_sae": recording.d_sae,
        "device": str(recording.device),
        "device_fixed": recording.device_fixed,
        "config": _config_json(recording.config),
        "forward_passes": recording.forward_passes,
        "since": recording.since,
        "active_since": recording.active_since,
        "next_automatic": next_automatic,
        "stats": recording.stats.state_meta(),
        "health": recording.health.state_meta(),
        "history": recording.history.state_meta(),
        "example_names": recording.examples.names.state_meta(),
        "positions": list(positions),
        "tails": list(tails),
        "labels": {str(f): text for f, text in sorted(labels.items())},
        "remote": recording.remote._asdict() if recording.remote is not None else None,
        "sae_id": sae_id,
    }
    return SavedMonitor(meta, host)


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
    saved = SavedMonitor(meta, tensors)
    _check_meta(saved, json_path)
    return saved


def restore_recording(recording: Recording, saved: SavedMonitor) -> dict[int, str]:
    """Copy `saved` into a freshly made `recording` of the saved width and configuration;
    returns the saved labels. Every tensor is checked before the first is copied, so a bad
    save raises a ValueError and leaves `recording` as it was."""
    meta, tensors = saved.meta, saved.tensors
    health = meta["health"]
    if not (isinstance(health, dict) and all(
            isinstance(health.get(k), int) and not isinstance(health.get(k), bool)
            for k in ("forwards", "sampled"))
            and (health.get("d_in") is None or isinstance(health.get("d_in"), int))):
        raise ValueError(f"the save's 'health' entry is malformed ({cut(repr(health), 80)}): "
                         f"the save is corrupt")
    recording.health.load_state_meta(health)
    live: dict[str, Tensor] = {"tokens": recording.tokens, "active_tokens": recording.active_tokens,
                               "values.counts": recording.values.counts}
    live.update({f"health.{n}": t for n, t in recording.health.state_tensors().items()})
    for part, owner in (("stats", recording.stats), ("history", recording.history),
                        ("examples", recording.examples)):
        live.update({f"{part}.{n}": t for n, t in owner.state_tensors().items()})
    remote = _remote(meta.get("remote"), recording.d_sae, recording.device)
    if remote is not None:
        live.update({f"remote.{n}": t for n, t in remote[1]._asdict().items()})
    positions = _keyed(tensors, _POSITIONS, meta["positions"], 1, None)
    tails = _keyed(tensors, _TAILS, meta["tails"], 2, recording.examples.window)
    extra = sorted(set(tensors) - set(live) - {f"{_POSITIONS}{i}" for i in range(len(positions))}
                   - {f"{_TAILS}{i}" for i in range(len(tails))})
    if extra:
        raise ValueError(f"the save holds tensors this version does not know: {extra[:5]}")
    for name, target in live.items():
        _check_tensor(name, tensors.get(name), target.shape, target.dtype)
    labels = load_labels(meta["labels"], recording.d_sae)
    for name, target in live.items():
        target.copy_(tensors[name])
    device = recording.device
    recording.positions.tracked = OrderedDict(
        (rid, t.to(device)) for rid, t in positions.items())
    recording.examples.tails = OrderedDict((rid, t.to(device)) for rid, t in tails.items())
    recording.stats.load_state_meta(meta["stats"])
    recording.history.load_state_meta(meta["history"])
    recording.examples.names.load_state_meta(meta["example_names"])
    recording.forward_passes = int(meta["forward_passes"])
    recording.since, recording.active_since = float(meta["since"]), float(meta["active_since"])
    recording.device_fixed = recording.device_fixed or bool(meta["device_fixed"])
    if remote is not None:
        recording.remote, recording.stats.remote = remote[0], remote[1]
    return labels


def _remote(meta: Any, d_sae: int, device: torch.device) -> tuple[RemoteView, Totals] | None:
    """The other ranks' view saved after a sync: its totals (fresh, to be filled from the
    save) and scalars; None when the save has none."""
    if meta is None:
        return None
    fields = RemoteView._fields
    if not (isinstance(meta, dict) and set(meta) == set(fields)
            and all(isinstance(meta[f], (int, float)) and not isinstance(meta[f], bool)
                    for f in fields)):
        raise ValueError(f"the save's 'remote' entry is malformed ({cut(repr(meta), 80)}): "
                         f"the save is corrupt")
    return RemoteView(**meta), empty_totals(d_sae, device)


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


# Keys of the JSON document and the types they must have.
_META_TYPES: dict[str, type | tuple[type, ...]] = {
    "d_sae": int, "device": str, "device_fixed": bool, "config": dict, "forward_passes": int,
    "since": (int, float), "active_since": (int, float), "next_automatic": int,
    "stats": dict, "health": dict, "history": dict, "example_names": dict, "positions": list,
    "tails": list, "labels": dict,
}


def _check_meta(saved: SavedMonitor, path: Path) -> None:
    meta = saved.meta
    for key, kind in _META_TYPES.items():
        value = meta.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{path}: {key!r} is missing or not a {_kind_name(kind)} "
                             f"(got {cut(repr(value), 60)}): the save is corrupt")
    if meta["d_sae"] < 1 or meta["forward_passes"] < 0 or meta["next_automatic"] < 0:
        raise ValueError(f"{path}: d_sae, forward_passes or next_automatic out of range")
    try:
        saved.config  # noqa: B018 - validates the configuration
        for request_id in (*meta["positions"], *meta["tails"]):
            check_request_id(request_id)
        _check_names(meta["history"].get("names"), meta["history"].get("next_code"))
        _check_names(meta["example_names"].get("names"), meta["example_names"].get("next"))
        if not isinstance(meta["stats"].get("merged_any"), bool):
            raise ValueError("stats.merged_any must be true or false")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {cut(str(exc), 300)}") from None


def _check_names(names: Any, next_code: Any) -> None:
    if not isinstance(names, list) or not is_int(next_code):
        raise ValueError("request names must be a list and the next code an int")
    for entry in names:
        if not (isinstance(entry, list) and len(entry) == 2 and is_int(entry[0])
                and isinstance(entry[1], str)):
            raise ValueError(f"a request name must be [code, name], got {cut(repr(entry), 60)}")


def _keyed(tensors: dict[str, Tensor], prefix: str, ids: list[str], dims: int,
           width: int | None) -> OrderedDict[str, Tensor]:
    """The per-request tensors `prefix0..` named by `ids`, checked (int64, `dims` dims, and
    `width` columns when given)."""
    out: OrderedDict[str, Tensor] = OrderedDict()
    for i, request_id in enumerate(ids):
        t = tensors.get(f"{prefix}{i}")
        if t is None or t.dtype != torch.int64 or t.dim() != dims or (
                width is not None and t.shape[-1] != width):
            raise ValueError(f"the save's tensor {prefix}{i} (request {request_id!r}) is "
                             f"missing or malformed: the save is corrupt")
        out[request_id] = t
    return out


def _check_tensor(name: str, tensor: Tensor | None, shape: torch.Size,
                  dtype: torch.dtype) -> None:
    if tensor is None:
        raise ValueError(f"the save has no tensor {name!r}: the save is corrupt")
    if tensor.shape != shape or tensor.dtype != dtype:
        raise ValueError(f"the save's tensor {name!r} is {tuple(tensor.shape)} {tensor.dtype}; "
                         f"its configuration needs {tuple(shape)} {dtype}: the save is corrupt")


def _available(device: torch.device) -> bool:
    backend = getattr(torch, device.type, None)
    try:
        count = backend.device_count() if backend is not None else 0
    except Exception:  # a backend that cannot even count its devices is not usable
        return False
    return count > (device.index or 0)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


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
