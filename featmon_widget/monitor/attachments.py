"""Where a monitor is attached: its hooks on models, the SAE they encode with, the tokenizer
that names their tokens, the labels that name its features, and the failures the hooks reported
(each failure stops monitoring at that hook, never the forward)."""

from __future__ import annotations

import threading
import warnings
import weakref
from typing import Any

import torch

from ..hooks import MonitorHook, Recorder
from ..hooks.model_hook import torch_module_of
from ..sae.adapter import sae_width
from .record.tokens import TokenText, no_text


class Attachments:
    """Hooks, the attached SAE, and hook errors of one monitor. Its changes take the monitor's
    `lock`; readers elsewhere hold it while they read."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self.hooks: list[MonitorHook] = []
        self.hook_point: str | None = None
        self.sae: Any = None
        self.errors = 0
        self.last_error: str | None = None
        self.token_text: TokenText | None = None
        self.labels: dict[int, str] = {}  # replaced whole, never changed in place
        self._model: weakref.ref[torch.nn.Module] | None = None
        self.attach_count = 0  # attaches so far: what was derived from the last one is stale

    @property
    def model(self) -> torch.nn.Module | None:
        """The torch module last attached (an nnsight model's inner module), while it lives;
        kept after its hooks are removed, never kept alive by the monitor."""
        return None if self._model is None else self._model()

    @property
    def tokenizer(self) -> Any:
        """The tokenizer that turns recorded token ids into text, if one is known."""
        return None if self.token_text is None else self.token_text.tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: Any) -> None:
        with self._lock:
            self.token_text = None if tokenizer is None else TokenText(tokenizer)

    def text_of(self) -> TokenText | Any:
        """A function from token id to text (None when no tokenizer is known)."""
        return self.token_text or no_text

    def attach(self, recorder: Recorder, d_sae: int, model: Any, hook_point: str,
               sae: Any, tokenizer: Any = None) -> MonitorHook:
        """Hook `sae` (or the SAE attached before) onto `model.get_submodule(hook_point)`;
        `tokenizer` (default: the model's own `tokenizer`, as TransformerLens models have)
        names the recorded tokens."""
        with self._lock:
            sae = sae if sae is not None else self.sae
            if sae is None:
                raise ValueError("attach needs an SAE: pass sae=... or build with for_sae(sae)")
            width = sae_width(sae)
            if width != d_sae:
                raise ValueError(f"SAE has d_sae={width}, monitor has d_sae={d_sae}")
            tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
            token_text = TokenText(tokenizer) if tokenizer is not None else self.token_text
            hook = MonitorHook(recorder, model, hook_point, sae)
            self.token_text = token_text
            self.hooks.append(hook)
            self.hook_point = hook_point
            self.sae = sae
            self._model = weakref.ref(torch_module_of(model))
            self.attach_count += 1
            return hook

    def removed(self, hook: MonitorHook) -> None:
        """Forget a hook that detached itself."""
        with self._lock:
            if hook in self.hooks:
                self.hooks.remove(hook)

    def remove_hooks(self) -> None:
        """Remove every hook (each calls back `removed`; called without the lock held)."""
        for hook in list(self.hooks):
            hook.remove()

    def failed(self, hook: Any, exc: BaseException) -> None:
        """Count a failure inside `hook` and warn (the hook has already removed itself)."""
        with self._lock:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"featmon_widget: monitoring failed at {getattr(hook, 'hook_point', '?')} and "
                f"was stopped there ({self.last_error}); the model's forward is unaffected",
                RuntimeWarning, stacklevel=4,
            )
