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
