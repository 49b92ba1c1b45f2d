"""What a hook needs from whoever records: the `FeatureMonitor` implements this protocol, so the
hooks never import the monitor."""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Recorder(Protocol):
    """Receives a hooked layer's output, the hook's failures and its removal."""

    def current_request(self) -> str:
        """The request id a forward starting now belongs to."""
        ...

    def encode_and_record(self, sae: Any, x: torch.Tensor, request_id: str,
                          mask: torch.Tensor | None = None,
                          position_ids: torch.Tensor | None = None,
                          token_ids: torch.Tensor | None = None) -> None:
        """Encode the layer output `x` with `sae` and record the features (and which tokens
        they belong to, when `token_ids` [batch, tokens] is known)."""
        ...

    def report_hook_error(self, hook: Any, exc: BaseException) -> None:
        """A failure inside monitoring at `hook` (the hook has removed itself)."""
        ...

    def hook_removed(self, hook: Any) -> None:
        """`hook` is detached from its model."""
        ...
