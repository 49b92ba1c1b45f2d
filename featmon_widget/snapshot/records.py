"""History records on the host: the columns gathered from the device ring, decoded into rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

Tensor = torch.Tensor


class HistoryTail(NamedTuple):
    """The newest slots of the history ring, gathered on the device, oldest first."""

    # top_idx, top_val, monitored values, request code, row, position, timestamp, token id
    columns: list[Tensor]
    held: Tensor  # int64 scalar: how many of the gathered slots hold a record (the newest ones)
    names: dict[int, str]  # request code -> request id
    monitored: tuple[int, ...]  # the features whose values the records carry


@dataclass
class HistoryRows:
    """History records copied to the host, oldest first."""

    top_idx: list[list[int]]
    top_val: list[list[float]]
    values: list[list[float]]
    request_ids: list[str]
    rows: list[int]
    positions: list[int]
    timestamps: list[float]
    token_ids: list[int]  # -1 where the token is not known

    def __len__(self) -> int:
        return len(self.positions)

    def top_above(self, i: int, threshold: float) -> list[tuple[int, float]]:
        """Record `i`'s strongest features above `threshold`, strongest first (padding slots,
        index -1, left out)."""
        return [(f, v) for f, v in zip(self.top_idx[i], self.top_val[i], strict=True)
                if f >= 0 and v > threshold]


def history_rows(columns: list[Tensor], held: int, names: dict[int, str]) -> HistoryRows:
    """`HistoryRows` from host copies of a `HistoryTail`'s columns."""
    top_idx, top_val, values, request, row, position, timestamp, token = (
        c[c.shape[0] - held:].tolist() for c in columns
    )
    return HistoryRows(
        top_idx=top_idx, top_val=top_val, values=values,
        request_ids=[names.get(c, "?") for c in request],
        rows=row, positions=position, timestamps=timestamp, token_ids=token,
    )
