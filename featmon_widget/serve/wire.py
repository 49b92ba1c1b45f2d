"""The JSON forms shared by the server and `RemoteMonitor`: result types to plain dicts and
back, and snapshots with their binary arrays as tagged base64 (JSON has no bytes).

Nothing here imports the web stack, so the client needs only httpx and websockets.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from typing import Any, TypeVar

from .. import types
from ..snapshot.schemas import Snapshot

T = TypeVar("T")
BYTES_TAG = "$b64"  # {"$b64": "..."} stands for a bytes value


def jsonable(value: Any) -> Any:
    """`value` as JSON values: dataclasses as dicts, tuples as lists, dict keys as text, bytes
    tagged as base64, NaN/Inf as None (strict JSON has no NaN; browsers reject it)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {BYTES_TAG: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """Strict JSON text of `jsonable(value)`."""
    return json.dumps(jsonable(value), allow_nan=False, ensure_ascii=False,
                      separators=(",", ":"))


def _unbytes(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and BYTES_TAG in value:
            return base64.b64decode(value[BYTES_TAG])
        return {k: _unbytes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unbytes(v) for v in value]
    return value


def build(cls: type[T], data: dict[str, Any]) -> T:
    """A result dataclass from its JSON dict; fields it does not know (a newer server's) are
    ignored, so old clients keep working."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def state_from(data: dict[str, Any]) -> types.MonitorState:
    """A `MonitorState` from its JSON form."""
    return build(types.MonitorState, data)


def statistics_from(data: dict[str, Any]) -> types.FeatureStatistics:
    """A `FeatureStatistics` row from its JSON form (`top_tokens` back to tuples)."""
    top = data.get("top_tokens")
    if top is not None:
        data = {**data, "top_tokens": [(str(text), int(n)) for text, n in top]}
    return build(types.FeatureStatistics, data)


def record_from(data: dict[str, Any]) -> types.ActivationRecord:
    """An `ActivationRecord` from its JSON form (keys of `activations` back to ints, `top_k`
    back to tuples)."""
    data = {**data, "activations": {int(k): v for k, v in data["activations"].items()},
            "top_k": [(int(i), v) for i, v in data["top_k"]]}
    return build(types.ActivationRecord, data)


def history_from(data: dict[str, Any]) -> types.HistoryResponse:
    """A `HistoryResponse` from its JSON form."""
    return types.HistoryResponse(records=[record_from(r) for r in data["records"]],
                                 total=data["total"])


def statistics_response_from(data: dict[str, Any]) -> types.StatisticsResponse:
    """A `StatisticsResponse` from its JSON form."""
    return types.StatisticsResponse(features=[statistics_from(r) for r in data["features"]],
                                    total_activations=data["total_activations"],
                                    since=data["since"])


def top_from(data: dict[str, Any]) -> types.TopFeaturesResponse:
    """A `TopFeaturesResponse` from its JSON form."""
    return types.TopFeaturesResponse(metric=data["metric"],
                                     features=[statistics_from(r) for r in data["features"]])


def examples_from(data: dict[str, Any]) -> types.ExamplesResponse:
    """An `ExamplesResponse` from its JSON form."""
    return types.ExamplesResponse(
        feature=data["feature"], label=data.get("label"), kind=data.get("kind", "top"),
        examples=[build(types.ActivatingExample, e) for e in data["examples"]])


def health_from(data: dict[str, Any]) -> types.HealthResponse:
    """A `HealthResponse` from its JSON form."""
    return build(types.HealthResponse, data)


def drift_from(data: dict[str, Any]) -> types.DriftResponse:
    """A `DriftResponse` from its JSON form."""
    return build(types.DriftResponse, {
        **data, "features": [build(types.DriftFeature, f) for f in data["features"]]})


def cofiring_from(data: dict[str, Any]) -> types.CoFiringResponse:
    """A `CoFiringResponse` from its JSON form."""
    return build(types.CoFiringResponse, {
        **data, "features": [build(types.CoFiringFeature, f) for f in data["features"]]})


def probe_from(data: dict[str, Any]) -> types.ProbeResponse:
    """A `ProbeResponse` from its JSON form (feature keys back to ints, pairs to tuples)."""
    texts = [build(types.ProbeText, {
        **t, "activations": {int(f): v for f, v in t["activations"].items()},
        "top_features": [[(int(f), v) for f, v in token] for token in t["top_features"]]})
        for t in data["texts"]]
    return build(types.ProbeResponse, {
        **data, "texts": texts, "labels": {int(f): v for f, v in data["labels"].items()}})


def logits_from(data: dict[str, Any]) -> types.LogitsResponse:
    """A `LogitsResponse` from its JSON form."""
    return build(types.LogitsResponse, {
        **data, "top": [build(types.LogitToken, t) for t in data["top"]],
        "bottom": [build(types.LogitToken, t) for t in data["bottom"]]})


def snapshot_message(snapshot: Snapshot) -> dict[str, Any]:
    """A snapshot as JSON values (its arrays tagged base64)."""
    return jsonable(snapshot.to_message())


def snapshot_from(message: dict[str, Any]) -> Snapshot:
    """The `Snapshot` a `snapshot_message` describes."""
    data = _unbytes(message)
    data["state"] = state_from(data["state"])
    return build(Snapshot, data)
