"""The REST routes: the original service's 8 under `/api/monitoring` (same paths, methods,
parameters and field names) and the newer reads next to them. Each route is one monitor call;
a ValueError/TypeError from the monitor (it names the bad value and changes nothing) becomes a
422 naming the field."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from . import schemas, wire

PREFIX = "/api/monitoring"
T = TypeVar("T")
_FIELD = re.compile(r"^\W*([A-Za-z_][A-Za-z0-9_]*)")
MAX_FEATURES_QUERY = 4096  # features one statistics query may name


class ApiError(Exception):
    """A rejected request: HTTP `status`, what was wrong, and which field."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.field = status, detail, field


def rejected(exc: Exception, fields: tuple[str, ...]) -> ApiError:
    """The 4xx for a monitor's ValueError/TypeError: its message names the parameter first."""
    detail = str(exc)[:1000]
    match = _FIELD.match(detail)
    field = match.group(1) if match and match.group(1) in fields else None
    status = 409 if detail.startswith("no reference") else 422
    return ApiError(status, detail, field)


def _call(fields: tuple[str, ...], fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise rejected(exc, fields) from None


def _json(value: Any) -> JSONResponse:
    # Strict JSON (no NaN) without a second validation pass: the schemas document the shape and
    # the tests check every answer against them.
    return JSONResponse(wire.jsonable(value))


def _parse_features(values: list[str] | None) -> list[int] | None:
    """`?features=1&features=2` or `?features=1,2`."""
    if values is None:
        return None
    out: list[int] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not re.fullmatch(r"[0-9]{1,12}", item):
                raise ApiError(422, f"features must be feature indices (0, 1, ...), got "
                               f"{item[:40]!r}", "features")
            out.append(int(item))
            if len(out) > MAX_FEATURES_QUERY:
                raise ApiError(422, f"features may name at most {MAX_FEATURES_QUERY} features",
                               "features")
    return out


def monitoring_router(monitor: Any) -> APIRouter:
    """The routes for `monitor` (a `FeatureMonitor`, or anything with its methods)."""
    api = APIRouter(prefix=PREFIX, tags=["monitoring"])
    bad = {422: {"model": schemas.ErrorResponse}}

    @api.get("", response_model=schemas.MonitorState, summary="Get monitoring state")
    def get_state() -> Any:
        return _json(monitor.state)

    @api.post("/configure", response_model=schemas.MonitorState, responses=bad,
              summary="Configure monitoring (only the fields sent change)")
    def configure(body: schemas.ConfigureRequest) -> Any:
        changes = _call(schemas.CONFIGURE_FIELDS, body.changes)
        return _json(_call(schemas.CONFIGURE_FIELDS, monitor.configure, **changes))

    @api.post("/enable", response_model=schemas.MonitorState, responses=bad,
              summary="Enable or pause monitoring")
    def enable(body: schemas.EnableRequest) -> Any:
        return _json(_call(("enabled",), monitor.enable, body.enabled))

    @api.get("/history", response_model=schemas.HistoryResponse, responses=bad,
             summary="Activation history, newest first")
    def get_history(limit: int = 50,
                    request_id: Annotated[str | None, Query(max_length=1000)] = None,
                    row: int | None = None) -> Any:
        return _json(_call(("limit", "request_id", "row"), monitor.get_history, limit,
                           request_id, row))

    @api.delete("/history", response_model=schemas.ClearResponse, summary="Clear history")
    def clear_history() -> Any:
        n = monitor.clear_history()
        return _json({"cleared": n, "message": f"cleared {n} history records"})

    @api.get("/statistics", response_model=schemas.StatisticsResponse, responses=bad,
             summary="Feature statistics (default: the monitored features, or all)")
    def get_statistics(features: Annotated[list[str] | None, Query()] = None) -> Any:
        return _json(_call(("features",), monitor.get_statistics, _parse_features(features)))

    @api.delete("/statistics", response_model=schemas.ClearResponse,
                summary="Reset statistics")
    def reset_statistics() -> Any:
        n = monitor.reset_statistics()
        return _json({"cleared": n, "message": f"reset statistics of {n} features"})

    @api.post("/statistics/top", response_model=schemas.TopFeaturesResponse, responses=bad,
              summary="Top features by a metric")
    def top_features(body: schemas.TopFeaturesRequest) -> Any:
        top = _call(("k", "metric"), monitor.get_top_features, body.k, body.metric)
        return _json({"k": body.k, "metric": top.metric, "features": top.features})

    # ---- newer reads ------------------------------------------------------------------------

    @api.get("/examples/{feature}", response_model=schemas.ExamplesResponse, responses=bad,
             summary="A feature's top-activating examples, or (kind=sample) a uniform sample of "
                     "its activating tokens")
    def get_examples(feature: int, k: int | None = None, kind: str = "top") -> Any:
        return _json(_call(("feature", "k", "kind"), monitor.get_examples, feature, k, kind))

    @api.get("/health", response_model=schemas.HealthResponse, summary="SAE health")
    def get_health() -> Any:
        return _json(monitor.get_health())

    @api.get("/drift", response_model=schemas.DriftResponse,
             responses={**bad, 409: {"model": schemas.ErrorResponse}},
             summary="Features whose firing moved most against the reference")
    def get_drift(k: int = 10, direction: Annotated[str, Query(max_length=16)] = "hot") -> Any:
        return _json(_call(("k", "direction"), monitor.get_drift, k, direction))

    @api.get("/snapshot", responses=bad,
             summary="The widget's bounded snapshot (arrays as {\"$b64\": ...})")
    def get_snapshot(table_rows: int = 50, metric: Annotated[str, Query(max_length=32)] = "mean",
                     records: int = 20, search: Annotated[str, Query(max_length=1000)] = "") -> Any:
        snap = _call(("table_rows", "metric", "records", "search"), monitor.snapshot,
                     table_rows, metric, records, search)
        return JSONResponse(wire.snapshot_message(snap))

    _optional_reads(api, monitor, bad)
    return api


def _optional_reads(api: APIRouter, monitor: Any, bad: dict[Any, Any]) -> None:
    """Reads served only when the monitor has them (they arrive with newer monitors)."""
    if hasattr(monitor, "get_distribution"):
        @api.get("/distribution/{feature}", responses=bad, summary="A feature's distribution")
        def get_distribution(feature: int) -> Any:
            return _json(_call(("feature",), monitor.get_distribution, feature))

    if hasattr(monitor, "get_cofiring"):
        @api.get("/cofiring/{feature}", responses=bad,
                 summary="The features that fire together with a feature")
        def get_cofiring(feature: int, k: int = 10) -> Any:
            return _json(_call(("feature", "k"), monitor.get_cofiring, feature, k))

    if hasattr(monitor, "get_logits"):
        @api.get("/logits/{feature}", responses=bad,
                 summary="The tokens a feature promotes and suppresses")
        def get_logits(feature: int, k: int = 10) -> Any:
            return _json(_call(("feature", "k"), monitor.get_logits, feature, k))

    if hasattr(monitor, "probe"):
        @api.post("/probe", responses=bad, summary="The features on each token of texts")
        def probe(body: schemas.ProbeRequest) -> Any:
            return _json(_call(("texts", "record", "features", "k"), monitor.probe,
                               body.texts, body.record, body.features, body.k))
