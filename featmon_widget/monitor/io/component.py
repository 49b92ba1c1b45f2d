"""What a monitor shares beyond its process: save and load (`saving`), exports for other tools
(`exports`) and statistics merged across torch.distributed ranks (`sync`). `Sharing` does them
for `FeatureMonitor`, which owns one and delegates to it."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import torch

from ...live.delivery import LiveDelivery
from ...sae.adapter import sae_id
from ...snapshot.schemas import Snapshot
from ..attachments import Attachments
from ..record.recording import Recording
from ..record.requests import RequestContext
from .exports import history_frame, log_feature_density, write_parquet, write_sparsity
from .saving import SavedMonitor, read_save, recording_state, restore_recording, write_save
from .sync import sync_recording


class Sharing:
    """Save, restore, export and sync one monitor (see module doc).

    Given the monitor's `lock`, its `recording`, its `attached` labels, SAE and tokenizer, its
    `requests` (the automatic request numbering a save continues) and its `live` delivery (to
    tell listeners a sync happened).
    """

    def __init__(self, lock: threading.RLock, recording: Recording, attached: Attachments,
                 requests: RequestContext, live: LiveDelivery) -> None:
        self._lock = lock
        self._recording = recording
        self._attached = attached
        self._requests = requests
        self._live = live

    # ---- save and load ----------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Save what was recorded (statistics, history, examples, positions, configuration,
        labels) into the folder `path`; `restore` gives it back bit for bit. The SAE, hooks
        and subscribers are not saved."""
        with self._lock:
            saved = recording_state(self._recording, self._requests.next_automatic(),
                                    self._attached.labels, sae_id(self._attached.sae))
        return write_save(saved, path)

    @staticmethod
    def read(path: str | Path) -> SavedMonitor:
        """The save in the folder `path`, checked (a corrupt or newer save raises ValueError)."""
        return read_save(path)

    @staticmethod
    def settings(saved: SavedMonitor, device: torch.device | str | None) -> dict[str, Any]:
        """The monitor arguments that rebuild `saved`'s monitor on `device` (default: the
        saved device if this machine has it, else the CPU): width, device, configuration."""
        return {"d_sae": saved.d_sae, "device": device or saved.device_here(),
                **dataclasses.asdict(saved.config)}

    def restore(self, saved: SavedMonitor) -> None:
        """Put `saved`'s recording, labels and request numbering into this (new) monitor."""
        with self._lock:
            self._attached.labels = restore_recording(self._recording, saved)
            self._requests.continue_from(saved.meta["next_automatic"])

    # ---- exports ----------------------------------------------------------------------------

    def export_sparsity(self, path: str | Path) -> Path:
        """Write each feature's log10 firing density as SAELens' `sparsity.safetensors`
        (a folder `path` gets that file name); see `exports.log_feature_density`."""
        with self._lock:
            log_density = log_feature_density(self._recording.stats)
        return write_sparsity(log_density, path)

    def history_frame(self) -> Any:
        """The history as a pandas DataFrame, oldest first (see `exports.history_frame`)."""
        with self._lock:
            history = self._recording.history
            rows, monitored = history.read(), history.monitored
            threshold, token_text = self._recording.config.threshold, self._attached.text_of()
        return history_frame(rows, monitored, threshold, token_text)

    def export_history(self, path: str | Path) -> Path:
        """Write `history_frame()` to the Parquet file `path`."""
        return write_parquet(self.history_frame(), path)

    @staticmethod
    def to_html(snapshot: Snapshot, path: str | Path) -> Path:
        """Write the widget's view of `snapshot` (histograms, table, records) as one
        standalone HTML file that needs no kernel and no network."""
        from ...widget.static_page import page_json, standalone_page

        target = Path(path)
        target.write_text(standalone_page(page_json(snapshot.to_message())), encoding="utf-8")
        return target

    # ---- across ranks -----------------------------------------------------------------------

    def sync(self, group: Any = None) -> None:
        """Collective (call it on every rank of `group`): every rank's statistics become
        visible here; each rank keeps recording its own, and syncing again refreshes the
        others' part (never counting twice). See `sync`."""
        sync_recording(self._recording, self._lock, group)
        self._live.emit("synced")
