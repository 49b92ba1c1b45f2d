"""featmon_widget: live monitoring of sparse-autoencoder features inside Jupyter.

The packages follow the data: `sae` (SAEs and SAE-like objects) -> `hooks` (a model layer's
output) -> `monitor` (`FeatureMonitor`: statistics and history on the device) -> `snapshot`
(bounded summaries) -> `live` (throttled delivery) -> `widget` (the Jupyter view, bundled from
js/). `types` holds the public result types.
"""

from .hooks import MonitorHook
from .monitor import FeatureMonitor
from .monitor.config import MonitorConfig
from .monitor.oversight.watch import Watch
from .sae import SparseAutoencoder, load_sae, sae_width
from .snapshot.schemas import Snapshot
from .types import (
    ActivatingExample,
    ActivationRecord,
    CoFiringFeature,
    CoFiringResponse,
    DistributionResponse,
    DriftFeature,
    DriftResponse,
    ExamplesResponse,
    FeatureStatistics,
    HealthResponse,
    HistoryResponse,
    LogitsResponse,
    LogitToken,
    MonitorState,
    ProbeResponse,
    ProbeText,
    StatisticsResponse,
    TopFeaturesResponse,
    WatchHit,
)

__all__ = [
    "ActivatingExample",
    "ActivationRecord",
    "CoFiringFeature",
    "CoFiringResponse",
    "DistributionResponse",
    "DriftFeature",
    "DriftResponse",
    "ExamplesResponse",
    "FeatureMonitor",
    "FeatureStatistics",
    "HealthResponse",
    "HistoryResponse",
    "LogitToken",
    "LogitsResponse",
    "MonitorConfig",
    "MonitorHook",
    "MonitorState",
    "MonitorWidget",
    "ProbeResponse",
    "ProbeText",
    "RemoteMonitor",
    "Snapshot",
    "SparseAutoencoder",
    "StatisticsResponse",
    "TopFeaturesResponse",
    "Watch",
    "WatchHit",
    "load_sae",
    "sae_width",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The widget needs the built frontend bundle; import it only when asked for, so the core
    # monitor works from a source checkout that never ran the npm build.
    if name == "MonitorWidget":
        from .widget import MonitorWidget

        return MonitorWidget
    if name == "RemoteMonitor":  # needs the `serve` extra (httpx, websockets)
        from .serve.remote import RemoteMonitor

        return RemoteMonitor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
