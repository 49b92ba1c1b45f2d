"""History records on the host: the columns gathered from the device ring, decoded into rows."""

from __future__ import annotations

import math
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


def known_window(token_ids: list[int], activations: list[float], centre: int
                 ) -> tuple[list[int], int, list[float | None]]:
    """An example's window with unknown tokens (id -1) left out: the ids, where the activating
    token (`centre` of the full window) is among them (-1 if unknown), and the activations on
    them (None where not known)."""
    known = [j for j, t in enumerate(token_ids) if t >= 0]
    index = known.index(centre) if centre in known else -1
    acts = [None if math.isnan(activations[j]) else activations[j] for j in known]
    return [token_ids[j] for j in known], index, acts
