"""`FeatureMonitor.save` / `load`: a bit-exact round trip (dense, TopK and encoded input, with
examples, labels, positions and request names), and a clear error for every bad save."""

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from featmon_widget import FeatureMonitor, SparseAutoencoder
from featmon_widget.monitor.io import saving
from featmon_widget.monitor.record import recording as recording_module

D = 48


def feed(monitor: FeatureMonitor, seed: int, sae: SparseAutoencoder | None = None) -> None:
    """Dense, TopK and encoded batches, in named requests (positions and left contexts carry
    over) and automatic ones, with NaN/Inf and padding."""
    g = torch.Generator().manual_seed(seed)
    for step in range(4):
        acts = torch.randn(2, 6, D, generator=g) * 3
        acts[0, 1, 2] = float("nan")
        mask = torch.ones(2, 6, dtype=torch.int64)
        mask[1, :2] = 0
        with monitor.request("chat"):
            monitor.on_activation(acts.relu(), mask=mask,
                                  token_ids=torch.randint(0, 500, (2, 6), generator=g))
        monitor.on_activation(torch.randn(5, D, generator=g))
        indices = torch.stack([torch.randperm(D, generator=g)[:4] for _ in range(7)])
        monitor.on_sparse_activation(indices, torch.rand(7, 4, generator=g) * 5,
                                     request_id=f"topk-{step % 2}")
        if sae is not None:
            monitor.encode_and_record(sae, torch.randn(1, 5, sae.d_in, generator=g), "enc")


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes, so NaN payloads and -0.0 compare too."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def assert_identical(a: FeatureMonitor, b: FeatureMonitor) -> None:
    ta = saving.recording_state(a._recording, 0, {}, None)
    tb = saving.recording_state(b._recording, 0, {}, None)
    assert ta.tensors.keys() == tb.tensors.keys()
    for name in ta.tensors:
        assert torch.equal(bits(ta.tensors[name]), bits(tb.tensors[name])), name
    skip = {"saved_at", "written_by"}
    assert {k: v for k, v in ta.meta.items() if k not in skip} == \
        {k: v for k, v in tb.meta.items() if k not in skip}
    assert a.get_statistics() == b.get_statistics()
    assert a.get_history(1000) == b.get_history(1000)
    for f in range(0, D, 7):
        assert a.get_examples(f) == b.get_examples(f)
    # Not recorded data: the time monitoring took, and a lazily made host table's bytes.
    def recorded(state):
        return dataclasses.replace(state, monitor_ms=None, device_bytes=0, memory_bytes={})

    assert recorded(a.state) == recorded(b.state)
    assert a.get_health() == b.get_health()


@pytest.mark.parametrize("with_sae", [False, True])
def test_round_trip_is_bit_exact_and_stays_so(tmp_path, monkeypatch, with_sae):
    # One clock for both monitors, so the records written after loading match too.
    monkeypatch.setattr(recording_module, "time", SimpleNamespace(time=lambda: 1.8e9))
    g = torch.Generator().manual_seed(3)
    sae = SparseAutoencoder.from_tensors(
        torch.randn(16, D, generator=g), torch.randn(D, generator=g),
        torch.randn(D, 16, generator=g), torch.randn(16, generator=g)) if with_sae else None
    monitor = FeatureMonitor(D, compile=False, history_size=40, features=[1, 5, 9],
                             selected=[2, 3], examples_per_feature=3, context_window=2,
                             threshold=0.25)
    feed(monitor, 0, sae)
    monitor.set_labels({1: "one", 40: "forty"})
    monitor.save(tmp_path / "saved")
    loaded = FeatureMonitor.load(tmp_path / "saved", compile=False)
    assert_identical(loaded, monitor)
    assert loaded.get_examples(1).label == "one"
    # Everything that decides later rounding came back too: the same input keeps them equal.
    feed(monitor, 1, sae)
    feed(loaded, 1, sae)
    assert_identical(loaded, monitor)
    assert loaded.current_request() == monitor.current_request()  # no auto-N named twice


def test_a_save_can_be_replaced_and_an_empty_monitor_saved(tmp_path):
    monitor = FeatureMonitor(D, compile=False)
    monitor.save(tmp_path)
    assert FeatureMonitor.load(tmp_path).state.total_tokens == 0
    feed(monitor, 0)
    monitor.save(tmp_path)
    assert_identical(FeatureMonitor.load(tmp_path, compile=False), monitor)


def test_load_onto_a_device_given_or_missing(tmp_path):
    monitor = FeatureMonitor(D, compile=False, device="cpu")
    feed(monitor, 0)
    monitor.save(tmp_path)
    meta = json.loads((tmp_path / "monitor.json").read_text())
    assert meta["device"] == "cpu"
    # A monitor saved on a GPU loads on the CPU of a machine without one.
    meta["device"] = "cuda:7" if not torch.cuda.is_available() else "cuda:1000"
    (tmp_path / "monitor.json").write_text(json.dumps(saving.signed(meta)))
    loaded = FeatureMonitor.load(tmp_path, compile=False)
    assert loaded.device == torch.device("cpu")
    assert loaded.get_statistics() == monitor.get_statistics()


def tensors_file(folder):
    """The tensors file the save in `folder` names."""
    return folder / json.loads((folder / "monitor.json").read_text())["tensors_file"]


def rewrite(tmp_path, change_meta=None, change_tensors=None, sign=True):
    """Edit a save the way corruption or another version would, keeping both digests valid
    (unless not `sign`: a hand edit of the JSON)."""
    meta = json.loads((tmp_path / "monitor.json").read_text())
    if change_tensors:
        old = tensors_file(tmp_path)
        tensors = load_file(str(old))
        change_tensors(tensors)
        old.unlink()
        save_file(tensors, str(tmp_path / "new"))
        meta["tensors_sha256"] = digest = saving._sha256(tmp_path / "new")
        meta["tensors_file"] = name = f"tensors-{digest}.safetensors"
        (tmp_path / "new").rename(tmp_path / name)
    if change_meta:
        change_meta(meta)
    (tmp_path / "monitor.json").write_text(json.dumps(saving.signed(meta) if sign else meta))


@pytest.fixture
def saved(tmp_path):
    monitor = FeatureMonitor(D, compile=False, examples_per_feature=2)
    feed(monitor, 0)
    monitor.save(tmp_path)
    return tmp_path


def test_a_newer_format_says_upgrade(saved):
    rewrite(saved, lambda m: m.update(format_version=saving.FORMAT_VERSION + 1,
                                      written_by="featmon_widget 9.0"))
    newer = saving.FORMAT_VERSION + 1
    with pytest.raises(ValueError, match=rf"format version {newer} by featmon_widget 9\.0.*up"):
        FeatureMonitor.load(saved)


@pytest.mark.parametrize("corrupt, message", [
    (lambda p: tensors_file(p).write_bytes(b"\0" * 64), "does not match the digest"),
    (lambda p: (p / "monitor.json").write_text("{not json"), "not valid JSON"),
    (lambda p: (p / "monitor.json").write_text('{"format": "x"}'), "not a featmon_widget"),
    (lambda p: (p / "monitor.json").unlink(), "no featmon_widget save"),
    (lambda p: rewrite(p, lambda m: m.update(d_sae="48")), "'d_sae' is missing or not"),
    (lambda p: rewrite(p, lambda m: m["config"].update(top_k=10_000)), "top_k"),
    (lambda p: rewrite(p, lambda m: m["parts"]["positions"].update(requests=["x" * 300])),
     "request_id"),
    (lambda p: rewrite(p, lambda m: m["parts"]["totals"].update(remote={"tokens": 1})),
     "'remote' entry"),
    (lambda p: rewrite(p, change_tensors=lambda t: t.update(
        {"stats.count": t["stats.count"][:-1]})), r"stats\.count.*\(47,\).*needs \(48,\)"),
    (lambda p: rewrite(p, change_tensors=lambda t: t.pop("history.row")), "no tensor"),
    (lambda p: rewrite(p, change_tensors=lambda t: t.update(
        {"evil": torch.zeros(1)})), "does not know"),
    (lambda p: rewrite(p, lambda m: m.update(labels={"99": "out of range"})), "outside"),
])
def test_a_corrupt_save_is_a_clear_error(saved, corrupt, message):
    corrupt(saved)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        FeatureMonitor.load(saved)


def test_saving_to_a_file_path_or_from_meta_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        FeatureMonitor(D, compile=False).save(tmp_path / "file")
    with pytest.raises(ValueError, match="meta"):
        FeatureMonitor(D, device="meta", compile=False).save(tmp_path / "meta")
