"""A static plotly figure of a snapshot: the same histograms and table the widget draws."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .options import TABLE_COLUMNS
from .schemas import Snapshot


def _fmt(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.6g}"


def snapshot_figure(snap: Snapshot, table: bool = True) -> go.Figure:
    """Firing-frequency histogram, value histograms of the selected features and (with
    `table`) the top table. Without the table the figure needs only plotly's basic bundle (bar
    charts), which the static reports embed."""
    titles = ("Firing frequency across features (log10 active ratio)",
              "Activation values of selected features")
    if table:
        fig = make_subplots(
            rows=3, cols=1, vertical_spacing=0.08, row_heights=[0.3, 0.3, 0.4],
            specs=[[{"type": "xy"}], [{"type": "xy"}], [{"type": "table"}]],
            subplot_titles=(*titles, f"Top features by {snap.table_metric}"),
        )
    else:
        fig = make_subplots(rows=2, cols=1, vertical_spacing=0.15, subplot_titles=titles)
    edges = np.frombuffer(snap.frequency_edges, "<f4")
    counts = np.frombuffer(snap.frequency_counts, "<i4")
    labels = [f"{lo:.2f}..{hi:.2f}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    fig.add_trace(go.Bar(x=["never fired", *labels], y=[snap.never_fired, *counts.tolist()],
                         name="features", marker_color=["#999"] + ["#1f77b4"] * len(labels)),
                  row=1, col=1)

    features = np.frombuffer(snap.value_features, "<i4")
    value_edges = np.frombuffer(snap.value_edges, "<f4")
    value_counts = np.frombuffer(snap.value_counts, "<f8").reshape(len(features), len(value_edges))
    bin_labels = ["inactive", *(f"{lo:.3g}..{hi:.3g}"
                                for lo, hi in zip(value_edges[:-1], value_edges[1:], strict=True))]
    for feature, row in zip(features.tolist(), value_counts, strict=True):
        fig.add_trace(go.Bar(x=bin_labels, y=row.tolist(), name=f"feature {feature}"),
                      row=2, col=1)

    if table:
        index = np.frombuffer(snap.table_features, "<i4").tolist()
        columns = {name: np.frombuffer(snap.table_columns[name], "<f8")
                   for name in TABLE_COLUMNS}
        fig.add_trace(go.Table(
            header={"values": ["idx", *TABLE_COLUMNS]},
            cells={"values": [index, *([_fmt(v) for v in columns[name]]
                                       for name in TABLE_COLUMNS)]},
        ), row=3, col=1)
    state = snap.state
    fig.update_layout(
        height=900 if table else 620, barmode="group", showlegend=True,
        title=f"featmon: {state.total_tokens} tokens, {state.forward_passes} forward passes",
    )
    return fig
