"""Forward hooks that feed a layer's output through an SAE into a `Recorder`.

A pre-hook on the model captures each forward's request id, attention mask (the forward's
`attention_mask` argument, keyword or positional), position ids and input token ids; a hook on
the layer encodes its output and records it. The hooks never change the model's outputs, and a
failure inside monitoring is caught, reported to the recorder and stops monitoring at that hook,
never the forward.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Iterator
from typing import Any

import torch

from .recorder import Recorder


class _ForwardContext(threading.local):
    request_id: str | None = None
    mask: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None
    token_ids: torch.Tensor | None = None
    captured: list[torch.Tensor] | None = None  # this thread's layer outputs, while capturing


class MonitorHook:
    """A recorder (a `FeatureMonitor`) hooked onto `model.get_submodule(hook_point)`; `remove()`
    or use `with`. `model` may be an nnsight model (`LanguageModel`, `TransformersModel`,
    `NNsight`): the hooks go on the torch module it runs, so its `trace` and `generate`
    contexts are recorded like plain forwards."""

    def __init__(self, recorder: Recorder, model: Any, hook_point: str, sae: Any) -> None:
        if not isinstance(hook_point, str):
            raise TypeError(f"hook_point must be a dotted module name, got {hook_point!r}")
        model = torch_module_of(model)
        try:
            layer = model.get_submodule(hook_point)
        except AttributeError as exc:
            raise ValueError(f"hook_point {hook_point!r} is not a submodule of the model "
                             f"({exc})") from None
        self.recorder = recorder
        self.model = model
        self.hook_point = hook_point
        self.sae = sae
        self.active = True
        self._context = _ForwardContext()
        self._mask_arg = _positional_index(model, "attention_mask")
        self._handles = [
            model.register_forward_pre_hook(self._begin_forward, with_kwargs=True),
            model.register_forward_hook(self._end_forward, always_call=True),
            layer.register_forward_hook(self._after_layer),
        ]

    def _begin_forward(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ctx = self._context
        try:
            ctx.request_id = self.recorder.current_request()
            mask = kwargs.get("attention_mask")
            if mask is None and self._mask_arg is not None and len(args) > self._mask_arg:
                mask = args[self._mask_arg]  # passed positionally, e.g. `bert(ids, mask)`
            ctx.mask = mask.detach() if isinstance(mask, torch.Tensor) else None
            # HF generate passes pad-aware position ids; they also reveal a re-fed prefix.
            ids = kwargs.get("position_ids")
            ctx.position_ids = ids.detach() if isinstance(ids, torch.Tensor) else None
            ctx.token_ids = _input_token_ids(module, args, kwargs)
        except Exception as exc:
            self._fail(exc)

    def _end_forward(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        self._context.request_id = None
        self._context.mask = None
        self._context.position_ids = None
        self._context.token_ids = None

    def _after_layer(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        if not self.active:
            return
        try:
            # Some layers return a tuple (hidden states first), others a plain tensor.
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            if not isinstance(hidden, torch.Tensor):
                raise TypeError(f"{self.hook_point} returned {type(hidden).__name__}, "
                                "expected a tensor or a tuple starting with one")
            ctx = self._context
            if ctx.captured is not None:
                ctx.captured.append(hidden.detach())
            request_id = ctx.request_id or self.recorder.current_request()
            mask = ctx.mask
            if mask is not None and mask.dim() != 2:
                mask = None  # a prepared 4-D mask does not say which tokens are padding
            ids = ctx.position_ids
            if ids is not None and (ids.dim() != 2 or ids.shape[-1] != hidden.shape[-2]):
                ids = None  # not per-token ids of this layer's tokens: fall back to the mask
            # Token ids that do not fit this layer's tokens are dropped by the recorder.
            self.recorder.encode_and_record(self.sae, hidden.detach(), request_id, mask, ids,
                                            ctx.token_ids)
        except Exception as exc:
            self._fail(exc)

    @contextlib.contextmanager
    def capturing(self) -> Iterator[list[torch.Tensor]]:
        """Inside the block, the layer outputs of this thread's forwards are also appended to
        the list it gives (used by `probe`); other threads' forwards are not. Always ends
        capturing, even when the forward raises."""
        captured: list[torch.Tensor] = []
        previous, self._context.captured = self._context.captured, captured
        try:
            yield captured
        finally:
            self._context.captured = previous

    def _fail(self, exc: BaseException) -> None:
        self.remove()
        self.recorder.report_hook_error(self, exc)

    def remove(self) -> None:
        """Detach from the model; the monitor keeps everything it recorded."""
        self.active = False
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.recorder.hook_removed(self)

    def __enter__(self) -> MonitorHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"MonitorHook({self.hook_point!r}, {state})"


def torch_module_of(model: Any) -> torch.nn.Module:
    """`model` if it is a torch module, else the module an nnsight wrapper runs (`_module` in
    nnsight 0.5+, `_model` before), else a TypeError."""
    if isinstance(model, torch.nn.Module):
        return model
    for attribute in ("_module", "_model"):
        try:
            inner = object.__getattribute__(model, attribute)
        except AttributeError:
            continue
        if isinstance(inner, torch.nn.Module):
            return inner
    raise TypeError(f"model must be a torch.nn.Module or an nnsight model wrapping one, got "
                    f"{type(model).__name__}")


def _positional_index(model: torch.nn.Module, name: str) -> int | None:
    """Where parameter `name` of `model.forward` sits among its positional arguments, if it can
    be passed positionally."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    for i, param in enumerate(params):
        if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            return None
        if param.name == name:
            return i
    return None


def _input_token_ids(model: torch.nn.Module, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The forward's input token ids [batch, tokens]: HF `input_ids` (keyword or first
    positional), a TransformerLens tokens tensor, or a TransformerLens text input tokenized the
    way its forward does (`to_tokens` with its defaults)."""
    ids = kwargs.get("input_ids", kwargs.get("input", args[0] if args else None))
    if isinstance(ids, (str, list)) and hasattr(model, "to_tokens") \
            and not {"prepend_bos", "padding_side"} & set(kwargs):
        ids = model.to_tokens(ids)
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.dtype == torch.bool:
        return None
    ids = ids.detach()
    return ids if ids.dim() == 2 else ids.reshape(1, -1) if ids.dim() == 1 else None

