"""The top-activating examples as a part of the recorded state (`registry.StatePart`), kept
apart from the table's merge code in `examples`: what is saved (the table's fixed-shape
tensors, each request's left context as `tails.<i>`, and the request names), what a reset does
(a statistics reset empties the table; left contexts and names stay), and what is counted (the
table, not the left contexts)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from ...checks import cut
from .registry import (
    Event,
    Spec,
    StatePart,
    check_range,
    keyed_load,
    keyed_specs,
    keyed_tensors,
    nbytes,
)
from .requests import RequestNames, check_names_meta

Tensor = torch.Tensor

_FIXED = ("value", "request", "row", "position", "tokens", "acts")
_TAILS = "tails."


class ExampleState(StatePart):
    """The state-part side of `examples.ExampleTable` (which holds the attributes below)."""

    name = "examples"
    window: int
    device: torch.device
    value: Tensor
    tokens: Tensor
    acts: Tensor
    names: RequestNames
    tails: OrderedDict[str, Tensor]

    @property
    def nbytes(self) -> int:
        """Device bytes held by the table."""
        return nbytes(self.fixed_tensors().values())

    def fixed_tensors(self) -> dict[str, Tensor]:
        """The table's live fixed-shape tensors."""
        return {name: getattr(self, name) for name in _FIXED}

    def clear(self) -> None:
        """Forget every example (the requests' left contexts stay)."""
        self.value.fill_(float("-inf"))
        self.tokens.fill_(-1)
        self.acts.fill_(float("nan"))

    def state_tensors(self) -> dict[str, Tensor]:
        """The table, and each request's left context as `tails.<i>` (ids in the meta)."""
        return {**self.fixed_tensors(), **keyed_tensors(self.tails, _TAILS)}

    def state_meta(self) -> dict[str, Any]:
        """The request names of the examples, and the requests with a left context."""
        return {"names": self.names.state_meta(), "tails": list(self.tails)}

    def check_meta(self, meta: dict[str, Any]) -> None:
        """Names and left-context ids only."""
        if set(meta) != {"names", "tails"}:
            raise ValueError(f"expected the examples' names and tails, got "
                             f"{cut(repr(meta), 80)}")
        check_names_meta(meta["names"], "next")

    def expected_tensors(self, meta: dict[str, Any]) -> dict[str, Spec]:
        """The table as configured, and one int64 [rows, window] per left context."""
        fixed = {name: Spec(tuple(t.shape), t.dtype) for name, t in self.fixed_tensors().items()}
        tail = Spec((None, self.window), torch.int64)
        return {**fixed, **keyed_specs(meta["tails"], _TAILS, tail)}

    def check_values(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """No NaN among the examples' values (an empty slot is -inf), no negative row."""
        check_range(self.name, tensors, "value", nan=False)
        check_range(self.name, tensors, "row", 0)

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Copy a checked save in."""
        for name, target in self.fixed_tensors().items():
            target.copy_(tensors[name])
        self.tails = keyed_load(tensors, _TAILS, meta["tails"], self.device)
        self.names.load_state_meta(meta["names"])

    def reset_on(self, event: Event) -> None:
        """A statistics reset empties the table."""
        if event is Event.STATISTICS:
            self.clear()

    def memory_bytes(self) -> dict[str, int]:
        """The table (the left contexts are a few int64 per tracked request)."""
        return {"examples": self.nbytes}
