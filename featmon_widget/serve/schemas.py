"""Typed request and response bodies of the served API (pydantic, so they are checked and
documented in the OpenAPI schema).

The responses keep the original service's field names (state `enabled, sae_attached, sae_id,
monitored_features, history_size, history_count`; statistics rows `feature_idx, count, mean,
std, min, max, active_ratio`; records `timestamp, request_id, token_position, activations,
top_k`; ...) and add ours next to them. They are made from the result dataclasses in
`featmon_widget.types`, so a field added there is served without a second definition.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from .. import types

# Strict: "5" is not an int and 1 is not a bool; unknown fields are errors naming them.
REQUEST = ConfigDict(strict=True, extra="forbid")


def _model_of(cls: type, nested: dict[str, Any] | None = None) -> type[BaseModel]:
    """A pydantic model with the fields, types and defaults of the dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        kind = (nested or {}).get(f.name, hints[f.name])
        if f.default is not dataclasses.MISSING:
            fields[f.name] = (kind, f.default)
        elif f.default_factory is not dataclasses.MISSING:
            fields[f.name] = (kind, Field(default_factory=f.default_factory))
        else:
            fields[f.name] = (kind, ...)
    return create_model(cls.__name__, __doc__=cls.__doc__, **fields)


MonitorState = _model_of(types.MonitorState)
FeatureStatistics = _model_of(types.FeatureStatistics)
ActivationRecord = _model_of(types.ActivationRecord)
HistoryResponse = _model_of(types.HistoryResponse, {"records": list[ActivationRecord]})
StatisticsResponse = _model_of(types.StatisticsResponse,
                               {"features": list[FeatureStatistics]})
ActivatingExample = _model_of(types.ActivatingExample)
ExamplesResponse = _model_of(types.ExamplesResponse, {"examples": list[ActivatingExample]})
HealthResponse = _model_of(types.HealthResponse)
DriftFeature = _model_of(types.DriftFeature)
DriftResponse = _model_of(types.DriftResponse, {"features": list[DriftFeature]})


class TopFeaturesResponse(BaseModel):
    """The k features ranked highest by `metric` (ties to the lower index)."""

    k: int
    metric: str
    features: list[FeatureStatistics]  # type: ignore[valid-type]


class ClearResponse(BaseModel):
    """What a clear or reset did: `cleared` records (history) or features (statistics)."""

    cleared: int
    message: str


class ErrorResponse(BaseModel):
    """Every rejected request: what was wrong (`detail`) and which field (`field`, when one
    is to blame); nothing was changed."""

    detail: str
    field: str | None = None


class ConfigureRequest(BaseModel):
    """Changes to make; only the fields sent change (`features: null` means all features).
    The monitor checks the ranges (they depend on its width) and names the field it refuses."""

    model_config = REQUEST

    enabled: bool | None = None
    features: list[int] | None = None
    history_size: int | None = None
    top_k: int | None = None
    threshold: float | None = None
    throttle_ms: float | None = None
    selected: list[int] | None = None
    examples_per_feature: int | None = None
    context_window: int | None = None
    health_every: int | None = None

    def changes(self) -> dict[str, Any]:
        """The settings sent (`features` may be an explicit null; others may not)."""
        sent = self.model_dump(exclude_unset=True)
        nulls = sorted(k for k, v in sent.items() if v is None and k != "features")
        if nulls:
            raise ValueError(f"{nulls[0]} must not be null (leave it out to keep it)")
        return sent


class EnableRequest(BaseModel):
    """Record (true) or pause (false); pausing keeps everything recorded."""

    model_config = REQUEST

    enabled: bool


class TopFeaturesRequest(BaseModel):
    """How many features, ranked by which metric (one of `featmon_widget.types.METRICS`)."""

    model_config = REQUEST

    k: int = 10
    metric: str = "mean"


class ProbeRequest(BaseModel):
    """Texts to run through the model (served only when the monitor can probe); recorded into
    the statistics only if `record`."""

    model_config = REQUEST

    texts: str | Annotated[list[str], Field(max_length=64)]  # the body bound caps the text
    record: bool = False
    features: list[int] | None = None
    k: int = 5


CONFIGURE_FIELDS = tuple(ConfigureRequest.model_fields)
