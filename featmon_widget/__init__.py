"""featmon_widget: live monitoring of sparse-autoencoder features inside Jupyter."""

from .config import MonitorConfig
from .hooks import MonitorHook
from .monitor import FeatureMonitor, sae_width
from .sae import SparseAutoencoder, load_sae
from .schemas import (
    ActivationRecord,
    FeatureStatistics,
    HistoryResponse,
    MonitorState,
    Snapshot,
    StatisticsResponse,
    TopFeaturesResponse,
)

__all__ = [
    "ActivationRecord",
    "MonitorWidget",
    "FeatureMonitor",
    "FeatureStatistics",
    "HistoryResponse",
    "MonitorConfig",
    "MonitorHook",
    "MonitorState",
    "Snapshot",
    "SparseAutoencoder",
    "StatisticsResponse",
    "TopFeaturesResponse",
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
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
