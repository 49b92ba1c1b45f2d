"""Exports: SAELens' `sparsity.safetensors` and the history as a DataFrame / Parquet file."""

import math

import pandas as pd
import pytest
import torch
from safetensors import safe_open

from featmon_widget import FeatureMonitor
from featmon_widget.monitor.io.exports import read_sparsity

D = 32


@pytest.fixture
def monitor():
    m = FeatureMonitor(D, compile=False, features=[0, 3], history_size=30)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        with m.request("r"):
            m.on_activation(torch.randn(2, 4, D, generator=g),
                            token_ids=torch.randint(0, 50, (2, 4), generator=g))
    m.on_activation(torch.randn(3, D, generator=g))
    acts = torch.zeros(2, D)
    acts[0, 5] = float("nan")
    m.on_activation(acts)
    return m


def test_sparsity_is_what_saelens_writes_and_reads(monitor, tmp_path):
    path = monitor.export_sparsity(tmp_path)
    assert path.name == "sparsity.safetensors"
    # Read the way SAELens' pretrained loader does.
    with safe_open(str(path), framework="pt", device="cpu") as f:
        log_density = f.get_tensor("sparsity")
    assert log_density.dtype == torch.float32 and log_density.shape == (D,)
    rows = monitor.get_statistics(list(range(D))).features
    for f, row in enumerate(rows):
        want = math.log10(row.active_count / row.count + 1e-10)
        assert log_density[f].item() == pytest.approx(want, rel=1e-6), f
    assert torch.equal(read_sparsity(path, D), log_density)


def test_sparsity_matches_saelens_own_formula(monitor, tmp_path):
    sae_trainer = pytest.importorskip("sae_lens.training.sae_trainer")
    stats = monitor.get_statistics(list(range(D))).features
    density = torch.tensor([r.active_count / r.count for r in stats], dtype=torch.float32)
    theirs = sae_trainer._log_feature_sparsity(density)
    ours = read_sparsity(monitor.export_sparsity(tmp_path / "s.safetensors"))
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_never_seen_features_get_minus_ten(tmp_path):
    density = read_sparsity(FeatureMonitor(4, compile=False).export_sparsity(tmp_path))
    assert density.tolist() == [-10.0] * 4


def test_reading_something_else_is_a_clear_error(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        read_sparsity(tmp_path / "x.safetensors")
    path = FeatureMonitor(4, compile=False).export_sparsity(tmp_path)
    with pytest.raises(ValueError, match="has 4 features, expected 5"):
        read_sparsity(path, 5)


def test_history_frame_holds_every_record_oldest_first(monitor):
    frame = monitor.history_frame()
    records = monitor.get_history(1000).records[::-1]  # newest first -> oldest first
    assert len(frame) == len(records) == 29
    assert list(frame.columns) == ["time", "request_id", "row", "position", "token_id",
                                   "token", "top_features", "top_values", "feature_0",
                                   "feature_3"]
    for row, record in zip(frame.itertuples(index=False), records, strict=True):
        assert row.request_id == record.request_id and row.row == record.row
        assert row.position == record.token_position
        assert (None if pd.isna(row.token_id) else row.token_id) == record.token_id
        assert list(zip(row.top_features, row.top_values, strict=True)) == record.top_k
        assert row.feature_0 == pytest.approx(record.activations[0], nan_ok=True)
        assert row.time.timestamp() == pytest.approx(record.timestamp, abs=1e-6)


def test_history_parquet_round_trips(monitor, tmp_path):
    pytest.importorskip("pyarrow")
    path = monitor.export_history(tmp_path / "history.parquet")
    back = pd.read_parquet(path)
    frame = monitor.history_frame()
    assert back["request_id"].tolist() == frame["request_id"].tolist()
    assert back["top_features"].map(list).tolist() == frame["top_features"].tolist()
    assert back["token_id"].isna().sum() == frame["token_id"].isna().sum() > 0


def test_history_parquet_has_one_schema_empty_or_full_with_or_without_tokens(tmp_path):
    import pyarrow.parquet as pq

    m = FeatureMonitor(8, features=[1, 2], compile=False)
    schemas = [pq.read_schema(m.export_history(tmp_path / "empty.parquet"))]
    m.on_activation(torch.rand(3, 8), request_id="a")
    schemas.append(pq.read_schema(m.export_history(tmp_path / "no_tokens.parquet")))
    m.tokenizer = type("T", (), {"decode": lambda self, ids: "x" * len(ids)})()
    m.on_activation(torch.rand(1, 2, 8), token_ids=torch.tensor([[5, 6]]))
    full = m.export_history(tmp_path / "tokens.parquet")
    schemas.append(pq.read_schema(full))
    assert all(s.remove_metadata() == schemas[0].remove_metadata() for s in schemas)
    newest = m.get_history(2).records  # newest first; the file is oldest first
    assert pq.read_table(full).column("token").to_pylist()[-2:] == [newest[1].token,
                                                                     newest[0].token]
