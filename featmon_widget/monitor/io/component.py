"""What a monitor shares beyond its process: save and load (`saving`), exports for other tools
(`exports`) and statistics merged across torch.distributed ranks (`sync`). A base class of
`FeatureMonitor`, kept apart so the facade stays a list of the in-process operations."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import torch

from ...live.delivery import LiveDelivery
from ...sae.adapter import sae_id
from ...types import MonitorState
from ..attachments import Attachments
from ..config import MonitorConfig
from ..record.recording import Recording
from ..record.requests import RequestContext
from .exports import history_frame, log_feature_density, write_parquet, write_sparsity
from .saving import read_save, recording_state, restore_recording, write_save
from .sync import sync_recording


class Sharing:
    """Save, load, export and sync (see module doc); `FeatureMonitor` provides the state."""

    _lock: threading.RLock
    _recording: Recording
    _attached: Attachments
    _requests: RequestContext
    _live: LiveDelivery
    d_sae: int
    config: MonitorConfig
    state: MonitorState
    snapshot: Any

    def save(self, path: str | Path) -> Path:
        """Save what was recorded (statistics, history, examples, positions, configuration,
        labels) into the folder `path`; `FeatureMonitor.load` gives it back bit for bit. The
        SAE, hooks and subscribers are not saved."""
        with self._lock:
            saved = recording_state(self._recording, self._requests.next_automatic(),
                                    self._attached.labels, sae_id(self._attached.sae))
        return write_save(saved, path)

    @classmethod
    def load(cls, path: str | Path, *, device: torch.device | str | None = None,
             compile: bool | None = None) -> Any:
        """The monitor `save` wrote into `path`, on `device` (default: the saved device if
        this machine has it, else the CPU). A corrupt or newer save raises ValueError."""
        saved = read_save(path)
        monitor = cls(saved.d_sae, device=device or saved.device_here(), compile=compile,
                      **dataclasses.asdict(saved.config))
        with monitor._lock:
            monitor._attached.labels = restore_recording(monitor._recording, saved)
            monitor._requests.continue_from(saved.meta["next_automatic"])
        return monitor

    def export_sparsity(self, path: str | Path) -> Path:
        """Write each feature's log10 firing density as SAELens' `sparsity.safetensors`
        (a folder `path` gets that file name); see `exports.log_feature_density`."""
        with self._lock:
            log_density = log_feature_density(self._recording.stats)
        return write_sparsity(log_density, path)

    def history_frame(self) -> Any:
        """The history as a pandas DataFrame, oldest first (see `exports.history_frame`)."""
        with self._lock:
            rows, monitored = self._recording.history.read(), self._recording.history.monitored
            threshold, token_text = self.config.threshold, self._attached.text_of()
        return history_frame(rows, monitored, threshold, token_text)

    def export_history(self, path: str | Path) -> Path:
        """Write `history_frame()` to the Parquet file `path`."""
        return write_parquet(self.history_frame(), path)

    def to_html(self, path: str | Path, *, table_rows: int = 50, metric: str = "mean",
                records: int = 20) -> Path:
        """Write the widget's view of a snapshot taken now (histograms, table, records) as one
        standalone HTML file that needs no kernel and no network."""
        from ...widget.static_page import page_json, standalone_page

        message = self.snapshot(table_rows, metric, records).to_message()
        target = Path(path)
        target.write_text(standalone_page(page_json(message)), encoding="utf-8")
        return target

    def sync(self, group: Any = None) -> MonitorState:
        """Collective (call it on every rank of `group`): every rank's statistics become
        visible here, so rank 0's widget shows the whole job. Each rank keeps recording its own;
        syncing again refreshes the others' part (never counting twice). See `sync`."""
        sync_recording(self._recording, self._lock, group)
        self._live.emit("synced")
        return self.state

