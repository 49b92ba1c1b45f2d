"""Makes the format-version-1 save that `test_saving_v1.py` loads (kept in this folder).

Run it against a featmon_widget that writes format version 1 (a checkout of commit c4ecc43 or
earlier, where `saving.FORMAT_VERSION` is 1; it refuses any other), e.g. from this tree:

    PYTHONPATH=<that checkout> python tests/monitor/io/data/make_save_v1.py OUT_FOLDER

It writes into OUT_FOLDER (this folder, to refresh the fixture):

- `save_v1/`: a small monitor saved in format 1 (d_sae 32; dense, TopK and SAE-encoded forwards
  in named and automatic requests, so positions, left contexts and request names exist; sampled
  health with reconstructions; labels; a threshold; a remote view as a 2-rank sync leaves it);
- `save_v1_next.safetensors`: the SAE and the next batch both monitors are fed;
- `save_v1_after/`: the same monitor saved after that batch (the tensors a loaded monitor must
  reach, bit for bit);
- `save_v1_expected.json`: what the public API answered before and after that batch.

Every forward runs under one fixed clock, so the test can reproduce the timestamps.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from safetensors.torch import save_file

from featmon_widget import FeatureMonitor, SparseAutoencoder

D_SAE, D_IN = 32, 8
CLOCK = 1.8e9
CONFIG: dict[str, Any] = dict(compile=False, device="cpu", history_size=24, features=[1, 5, 9],
                              selected=[2, 3], examples_per_feature=3, context_window=2,
                              threshold=0.25, health_every=3)
LABELS = {1: "one", 7: "seven"}


def recording_module() -> Any:
    """The module whose `time` stamps records (its place moved between versions)."""
    for name in ("featmon_widget.monitor.record.recording", "featmon_widget.monitor.recording"):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    raise ModuleNotFoundError("no featmon_widget recording module")


def fix_clock() -> None:
    """Every timestamp the recording takes is CLOCK."""
    recording_module().time = SimpleNamespace(time=lambda: CLOCK)


def make_sae(seed: int = 5) -> SparseAutoencoder:
    g = torch.Generator().manual_seed(seed)
    return SparseAutoencoder.from_tensors(
        torch.randn(D_IN, D_SAE, generator=g), torch.randn(D_SAE, generator=g) * 0.1,
        torch.randn(D_SAE, D_IN, generator=g), torch.randn(D_IN, generator=g))


def make_batch(seed: int) -> dict[str, torch.Tensor]:
    """One round of input: dense with padding, NaN and token ids; TopK with one out-of-range
    index; an SAE input."""
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(2, 5, D_SAE, generator=g) * 2
    acts[0, 1, 2] = float("nan")
    mask = torch.ones(2, 5, dtype=torch.int64)
    mask[1, :2] = 0
    indices = torch.stack([torch.randperm(D_SAE, generator=g)[:4] for _ in range(6)])
    indices[3, 0] = D_SAE + 3  # dropped
    return {
        "dense": acts.relu(), "mask": mask,
        "token_ids": torch.randint(0, 500, (2, 5), generator=g),
        "auto": torch.randn(3, D_SAE, generator=g),
        "indices": indices, "values": torch.rand(6, 4, generator=g) * 5,
        "x": torch.randn(1, 4, D_IN, generator=g),
    }


def feed(monitor: FeatureMonitor, batch: dict[str, torch.Tensor], sae: SparseAutoencoder,
         step: int) -> None:
    """Record one round: a named dense request (positions and left contexts carry over), an
    automatic one, a TopK request and an encoded one."""
    with monitor.request("chat"):
        monitor.on_activation(batch["dense"], mask=batch["mask"], token_ids=batch["token_ids"])
    monitor.on_activation(batch["auto"])
    monitor.on_sparse_activation(batch["indices"], batch["values"],
                                 request_id=f"topk-{step % 2}")
    monitor.encode_and_record(sae, batch["x"], "enc")


def build() -> tuple[FeatureMonitor, SparseAutoencoder]:
    """The monitor as saved: three rounds, labels, and the view of a second rank."""
    fix_clock()
    sae = make_sae()
    monitor = FeatureMonitor(D_SAE, **CONFIG)
    for step in range(3):
        feed(monitor, make_batch(step), sae, step)
    monitor.set_labels(LABELS)
    other = FeatureMonitor(D_SAE, **CONFIG)
    feed(other, make_batch(100), sae, 0)
    simulate_sync(monitor, other)
    return monitor, sae


def simulate_sync(monitor: FeatureMonitor, other: FeatureMonitor) -> None:
    """What `sync` of a 2-rank job leaves on this rank when the other rank recorded `other`."""
    moments = importlib.import_module("featmon_widget.monitor.stats.moments")
    rec, theirs = monitor._recording, other._recording
    rec.stats.remote = moments.combine_totals(moments.empty_totals(D_SAE, rec.device),
                                              moments.Totals(*theirs.stats.local))
    rec.remote = recording_module().RemoteView(
        tokens=int(theirs.tokens), dropped_indices=int(theirs.stats.dropped_indices),
        forward_passes=theirs.forward_passes, ranks=2, synced_at=CLOCK)


def results(monitor: FeatureMonitor) -> dict[str, str]:
    """The public answers, as canonical JSON text (NaN written as NaN)."""
    def text(value: Any) -> str:
        return json.dumps(dataclasses.asdict(value), sort_keys=True)

    state = {k: v for k, v in monitor.state.to_dict().items()
             if k not in ("monitor_ms", "device_bytes", "memory_bytes")}
    out = {
        "statistics": text(monitor.get_statistics()),
        "statistics_all": text(monitor.get_statistics(list(range(D_SAE)))),
        "top_features": text(monitor.get_top_features(10, "std")),
        "history": text(monitor.get_history(1000)),
        "health": text(monitor.get_health()),
        "state": json.dumps(state, sort_keys=True),
        "current_request": monitor.current_request(),
    }
    out.update({f"examples/{f}": text(monitor.get_examples(f)) for f in range(D_SAE)})
    return out


def main(out: Path) -> None:
    saving = importlib.import_module(recording_module().__name__.replace("recording", "saving")
                                     .replace(".record.", ".io."))
    if saving.FORMAT_VERSION != 1:
        raise SystemExit(f"this featmon_widget writes format version {saving.FORMAT_VERSION}; "
                         f"run this with one that writes version 1 (see the module doc)")
    monitor, sae = build()
    monitor.save(out / "save_v1")
    before = results(monitor)
    nxt = make_batch(7)
    sae_tensors = {f"sae.{n}": getattr(sae, n).detach().clone()
                   for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    save_file({**nxt, **sae_tensors}, str(out / "save_v1_next.safetensors"))
    feed(monitor, nxt, sae, 3)
    monitor.save(out / "save_v1_after")
    after = results(monitor)
    document = {"format_version": 1, "before": before, "after": after}
    (out / "save_v1_expected.json").write_text(json.dumps(document, indent=1, sort_keys=True)
                                               + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
