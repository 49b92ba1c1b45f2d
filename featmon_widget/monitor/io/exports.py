"""What a monitor recorded, in the forms other tools read: SAELens' `sparsity.safetensors`
(log10 feature density) and the history as a pandas DataFrame or a Parquet file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ...checks import cut
from ...snapshot.records import HistoryRows
from ..stats.running import RunningStats

Tensor = torch.Tensor

# SAELens' name for the file and its one tensor, and the epsilon it adds before the log.
SPARSITY_FILE = "sparsity.safetensors"
SPARSITY_KEY = "sparsity"
SPARSITY_EPS = 1e-10


def log_feature_density(stats: RunningStats) -> Tensor:
    """log10(density + 1e-10) per feature, float32 [d_sae], on the host: density is the
    fraction of recorded tokens on which the feature was above the threshold (SAELens counts
    activations > 0: the same at the default threshold 0). Never-seen features get -10."""
    totals = stats.totals
    density = totals.active_count.to(torch.float64) / totals.count.clamp_min(1).to(torch.float64)
    return torch.log10(density + SPARSITY_EPS).to(torch.float32).cpu()


def write_sparsity(log_density: Tensor, path: str | Path) -> Path:
    """Write `log_density` as SAELens does; a folder `path` gets `sparsity.safetensors`."""
    target = Path(path)
    if target.is_dir():
        target = target / SPARSITY_FILE
    save_file({SPARSITY_KEY: log_density.contiguous()}, str(target))
    return target


# log10 densities up to this count as 0 (float32 rounding); above, a density over 1.
_LOG_DENSITY_SLACK = 1e-6


def read_sparsity(path: str | Path, d_sae: int | None = None) -> Tensor:
    """The log10 feature density in a SAELens `sparsity.safetensors` (a file, or a folder
    holding one), float32 [d_sae]; a ValueError when it is not one (or not `d_sae` wide)."""
    source = Path(path)
    if source.is_dir():
        source = source / SPARSITY_FILE
    try:
        tensors = load_file(str(source), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{source} is not a readable safetensors file: "
                         f"{cut(str(exc), 200)}") from None
    density = tensors.get(SPARSITY_KEY)
    if density is None or density.dim() != 1 or not density.is_floating_point():
        raise ValueError(f"{source} has no 1-D float tensor {SPARSITY_KEY!r} (found "
                         f"{cut(str(sorted(tensors)), 100)})")
    if d_sae is not None and density.shape[0] != d_sae:
        raise ValueError(f"{source} has {density.shape[0]} features, expected {d_sae}")
    # A density is in 0..1, so its log10 is at most 0 (plus float32 rounding of the 1e-10
    # SAELens adds); anything else is not a sparsity and would make every drift figure lie.
    bad = ~torch.isfinite(density) | (density > _LOG_DENSITY_SLACK)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise ValueError(f"{source}: {int(bad.sum())} log10 densities are not finite numbers "
                         f"<= 0 (feature {first} has {float(density[first])!r}): not a "
                         f"SAELens sparsity")
    return density.to(torch.float32)


def history_frame(rows: HistoryRows, monitored: tuple[int, ...], threshold: float,
                  token_text: Any) -> Any:
    """The history `rows` as a pandas DataFrame, oldest first: one row per recorded token with
    `time` (UTC), `request_id`, `row`, `position`, `token_id` (nullable), `token` (text, when a
    tokenizer is known), `top_features` / `top_values` (the token's strongest features above
    the threshold, strongest first) and one `feature_<i>` column per monitored feature."""
    pandas = _pandas()
    columns: dict[str, Any] = {
        "time": pandas.to_datetime(rows.timestamps, unit="s", utc=True),
        "request_id": pandas.Series(rows.request_ids, dtype=object),
        "row": pandas.array(rows.rows, dtype="int64"),
        "position": pandas.array(rows.positions, dtype="int64"),
        "token_id": pandas.array([t if t >= 0 else None for t in rows.token_ids],
                                 dtype="Int64"),
        "token": pandas.Series([token_text(t) if t >= 0 else None for t in rows.token_ids],
                               dtype=object),
    }
    top = [rows.top_above(i, threshold) for i in range(len(rows))]
    # object columns even when empty (an empty list would become float64)
    columns["top_features"] = pandas.Series([[f for f, _ in pairs] for pairs in top], dtype=object)
    columns["top_values"] = pandas.Series([[v for _, v in pairs] for pairs in top], dtype=object)
    for j, feature in enumerate(monitored):
        columns[f"feature_{feature}"] = pandas.array([v[j] for v in rows.values],
                                                     dtype="float32")
    return pandas.DataFrame(columns)


def write_parquet(frame: Any, path: str | Path) -> Path:
    """Write a history frame to the Parquet file `path` (needs pyarrow)."""
    try:
        import pyarrow  # noqa: F401 - pandas' Parquet engine
    except ImportError:
        raise ImportError("writing Parquet needs pyarrow: pip install "
                          "'featmon_widget[export]'") from None
    import pyarrow
    import pyarrow.parquet

    target = Path(path)
    table = pyarrow.Table.from_pandas(frame, schema=_history_schema(frame.columns),
                                      preserve_index=False)
    pyarrow.parquet.write_table(table, target)
    return target


def _history_schema(columns: Any) -> Any:
    """The Parquet schema of a history frame, declared: inferred from the values, an empty
    history (or one with no token text) would give other column types than a full one."""
    import pyarrow

    fixed = {"time": pyarrow.timestamp("ns", tz="UTC"), "request_id": pyarrow.large_string(),
             "row": pyarrow.int64(), "position": pyarrow.int64(), "token_id": pyarrow.int64(),
             "token": pyarrow.large_string(), "top_features": pyarrow.list_(pyarrow.int64()),
             "top_values": pyarrow.list_(pyarrow.float64())}
    return pyarrow.schema([(name, fixed.get(name, pyarrow.float32())) for name in columns])


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError("the history as a DataFrame needs pandas: pip install "
                          "'featmon_widget[export]'") from None
    return pandas
