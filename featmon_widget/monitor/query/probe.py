"""Test a text: `Probe` runs the attached model on a few texts (no grad) and reads the SAE's
features at the hook point on every token, the way the hook would see them.

The hook's own layer output is captured (`MonitorHook.capturing`, this thread only) and
encoded with the attached SAE, so the values are exactly `sae.encode` of that output. With
`record=False` the pass runs inside `Intake.muted()`: nothing it sees reaches any recorded
state (statistics, history, examples, totals, watches, health, the automatic request ids),
while other threads keep recording. With `record=True` each text is recorded as its own request
`probe-N`. The model runs without the monitor's lock (the lock is taken to read the attachment
and, when recording, by the ordinary recording path), so a probe never blocks another thread's
forward for longer than a recording does.
"""

from __future__ import annotations

import inspect
import itertools
import math
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

import torch

from ...checks import check_int, check_text, cut, is_int
from ...hooks import MonitorHook
from ...hooks.model_hook import torch_module_of
from ...sae.adapter import flatten_heads
from ...types import ProbeResponse, ProbeText
from ..attachments import Attachments
from ..record.component import Intake
from ..record.recording import Recording

# Bounds of one probe: texts, characters and tokens per text, features read on every token,
# and top features listed per token.
MAX_PROBE_TEXTS = 16
MAX_PROBE_CHARS = 2_000
MAX_PROBE_TOKENS = 256
MAX_PROBE_FEATURES = 64
PROBE_TOP_K_RANGE = (1, 20)


class _Input(NamedTuple):
    """One text, tokenized: its ids [1, tokens] and the forward's keyword arguments."""

    ids: torch.Tensor
    run: Callable[[torch.nn.Module], Any]


class Probe:
    """Answers `FeatureMonitor.probe` (see module doc), given the monitor's `lock`, its
    `recording` (configuration, request positions), its `attached` model, SAE, tokenizer and
    labels, and its `intake` (requests, muting)."""

    def __init__(self, lock: threading.RLock, recording: Recording, attached: Attachments,
                 intake: Intake) -> None:
        self._lock = lock
        self._recording = recording
        self._attached = attached
        self._intake = intake
        self._numbers = itertools.count()

    def probe(self, texts: str | list[str], record: bool = False,
              features: list[int] | None = None, k: int = 5) -> ProbeResponse:
        """Run the attached model on `texts` (one text or a list) and read the features on
        each token: `features` (default: the selected ones) on every token, and each token's
        top `k` above the threshold. Bad input raises ValueError before any forward."""
        texts = check_texts(texts)
        if not isinstance(record, bool):
            raise ValueError(f"record must be True or False, got {record!r}")
        k = check_int("k", k, *PROBE_TOP_K_RANGE)
        with self._lock:
            hook = self._hook()
            sae, labels, text_of = hook.sae, self._attached.labels, self._attached.text_of()
            tokenizer, config = self._attached.tokenizer, self._recording.config
        features = (list(config.selected) if features is None
                    else check_features(features, self._recording.d_sae))
        model = torch_module_of(hook.model)
        device = model_device(model)
        inputs = [tokenize(model, tokenizer, text, device) for text in texts]  # all checked
        out = []
        for text, given in zip(texts, inputs, strict=True):
            request = self._next_request() if record else None
            acts = self._run(hook, sae, given, request)
            ids = given.ids[0].tolist()
            if acts.shape[0] != len(ids):
                raise ValueError(f"hook point {hook.hook_point!r} gave {acts.shape[0]} tokens "
                                 f"for {len(ids)} input tokens; probe needs one per token")
            out.append(probe_text(text, ids, acts, features, k, config.threshold, text_of,
                                  request))
        named = set(features) | {f for t in out for top in t.top_features for f, _ in top}
        return ProbeResponse(features=features, texts=out, hook_point=hook.hook_point,
                             labels={f: labels[f] for f in sorted(named) if f in labels},
                             recorded=record)

    def _hook(self) -> MonitorHook:
        """The hook attached last (the caller holds the lock)."""
        if not self._attached.hooks:
            raise ValueError("probe needs an attached model: call "
                             "monitor.attach(model, hook_point, sae) first")
        return self._attached.hooks[-1]

    def _next_request(self) -> str:
        """A `probe-N` request id no tracked request has."""
        with self._lock:
            tracked = self._recording.positions.tracked
            while (name := f"probe-{next(self._numbers)}") in tracked:
                pass
        return name

    def _run(self, hook: MonitorHook, sae: Any, given: _Input,
             request: str | None) -> torch.Tensor:
        """One forward of `given` (recorded as `request`, or muted): the SAE's features on the
        hook point's output, float32 [tokens, d_sae]."""
        scope: AbstractContextManager[Any] = (self._intake.muted() if request is None
                                              else self._intake.request(request))
        with scope, hook.capturing() as captured, torch.no_grad():
            given.run(hook.model)
        if not captured:
            raise ValueError(f"the model's forward never reached hook point "
                             f"{hook.hook_point!r}")
        with torch.no_grad():
            acts = sae.encode(flatten_heads(sae, captured[0]))
        return acts.reshape(-1, acts.shape[-1]).to(torch.float32)


def check_texts(texts: object) -> list[str]:
    """`texts` as a list of 1..MAX_PROBE_TEXTS non-empty strings of at most MAX_PROBE_CHARS
    characters each; a ValueError naming the bad value or the limit otherwise."""
    items = [texts] if isinstance(texts, str) else texts
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"probe takes a text or a list of texts, got {type(texts).__name__}")
    if not 0 < len(items) <= MAX_PROBE_TEXTS:
        raise ValueError(f"probe takes 1..{MAX_PROBE_TEXTS} texts (MAX_PROBE_TEXTS), got "
                         f"{len(items)}")
    for i, text in enumerate(items):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text {i} must be a non-empty string, got {cut(repr(text), 41)}")
        if len(text) > MAX_PROBE_CHARS:
            raise ValueError(f"text {i} has {len(text)} characters; probe takes at most "
                             f"{MAX_PROBE_CHARS} (MAX_PROBE_CHARS)")
        check_text(f"text {i}", text)
    return list(items)


def check_features(features: object, d_sae: int) -> list[int]:
    """`features` as a list of at most MAX_PROBE_FEATURES distinct indices below `d_sae`."""
    if not isinstance(features, (list, tuple)) or len(features) > MAX_PROBE_FEATURES:
        raise ValueError(f"features must be a list of at most {MAX_PROBE_FEATURES} indices "
                         f"(MAX_PROBE_FEATURES), got {cut(repr(features), 60)}")
    for f in features:
        if not is_int(f):
            raise ValueError(f"features must be ints, got {f!r}")
        check_int("feature", f, 0, d_sae - 1)
    return list(dict.fromkeys(int(f) for f in features))


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's parameters are; a ValueError for a model not loaded yet (meta)."""
    param = next(iter(model.parameters()), None)
    device = torch.device("cpu") if param is None else param.device
    if device.type == "meta":
        raise ValueError("the attached model's weights are not loaded (meta device); load or "
                         "dispatch it (nnsight: dispatch=True) before probing")
    return device


def tokenize(model: torch.nn.Module, tokenizer: Any, text: str,
             device: torch.device) -> _Input:
    """`text` as the attached model takes it: a TransformerLens model with a tokenizer by its
    own `to_tokens` (what its forward does with text), any other model by the monitor's
    tokenizer (a Hugging Face tokenizer: `tokenizer(text, return_tensors="pt")`)."""
    if hasattr(model, "to_tokens") and getattr(model, "tokenizer", None) is not None:
        ids = model.to_tokens(text).to(device)
        _check_length(ids)
        return _Input(ids, lambda m: m(ids))
    if tokenizer is None:
        raise ValueError("probe needs a tokenizer: attach(model, hook_point, sae, "
                         "tokenizer=...) or set monitor.tokenizer")
    if not callable(tokenizer):
        raise ValueError(f"probe needs a tokenizer that encodes text (tokenizer(text, "
                         f"return_tensors='pt')); {type(tokenizer).__name__} cannot")
    encoded = tokenizer(text, return_tensors="pt")
    ids = encoded["input_ids"].to(device)
    _check_length(ids)
    mask = encoded.get("attention_mask")
    takes = _keywords(model)
    if "input_ids" not in takes:
        return _Input(ids, lambda m: m(ids))
    kwargs = {"input_ids": ids}
    if mask is not None and "attention_mask" in takes:
        kwargs["attention_mask"] = mask.to(device)
    return _Input(ids, lambda m: m(**kwargs))


def _check_length(ids: torch.Tensor) -> None:
    n = ids.shape[-1]
    if ids.dim() != 2 or ids.shape[0] != 1 or not 0 < n <= MAX_PROBE_TOKENS:
        raise ValueError(f"a probed text must give 1..{MAX_PROBE_TOKENS} tokens "
                         f"(MAX_PROBE_TOKENS), got {n}")


def _keywords(model: torch.nn.Module) -> set[str]:
    """The keyword arguments `model.forward` names."""
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def probe_text(text: str, ids: list[int], acts: torch.Tensor, features: list[int], k: int,
               threshold: float, text_of: Callable[[int], str | None],
               request: str | None) -> ProbeText:
    """One text's answer from its features `acts` [tokens, d_sae] (two host copies)."""
    index = torch.tensor(features, dtype=torch.int64, device=acts.device)
    chosen = acts.index_select(1, index).t().cpu().tolist()
    top = acts.topk(min(k, acts.shape[1]), dim=1)
    values, indices = top.values.cpu().tolist(), top.indices.cpu().tolist()
    tops = [[(f, v) for f, v in zip(fs, vs, strict=True) if math.isfinite(v) and v > threshold]
            for fs, vs in zip(indices, values, strict=True)]
    return ProbeText(text=text, tokens=[text_of(t) for t in ids], token_ids=ids,
                     activations=dict(zip(features, chosen, strict=True)), top_features=tops,
                     request_id=request)
