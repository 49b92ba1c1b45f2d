"""A model small enough for any test that needs one attached: an embedding and one linear
layer (the hook point), and a tokenizer with one token per character."""

import torch

from featmon_widget import FeatureMonitor, SparseAutoencoder

D_MODEL, VOCAB = 8, 50


class TinyLM(torch.nn.Module):
    """Embedding then one linear layer (the hook point, `"layer"`)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.embed = torch.nn.Embedding(VOCAB, D_MODEL)
        self.embed.weight.data = torch.randn(VOCAB, D_MODEL, generator=g)
        self.layer = torch.nn.Linear(D_MODEL, D_MODEL)

    def forward(self, input_ids, attention_mask=None):
        return self.layer(self.embed(input_ids))


class Chars:
    """One token per character: id = ord(c) % VOCAB."""

    def __call__(self, text, return_tensors=None):
        return {"input_ids": torch.tensor([[ord(c) % VOCAB for c in text]])}

    def decode(self, ids):
        return "".join(chr(97 + i % 26) for i in ids)


def tiny_sae(d_sae: int) -> SparseAutoencoder:
    """A random SAE for `TinyLM`'s layer."""
    g = torch.Generator().manual_seed(1)
    return SparseAutoencoder.from_tensors(torch.randn(D_MODEL, d_sae, generator=g),
                                          torch.zeros(d_sae),
                                          torch.randn(d_sae, D_MODEL, generator=g),
                                          torch.zeros(D_MODEL))


def attach_tiny(monitor: FeatureMonitor, sae: SparseAutoencoder) -> FeatureMonitor:
    """`monitor` hooked on a fresh `TinyLM` with the `Chars` tokenizer."""
    monitor.attach(TinyLM().eval(), "layer", sae, tokenizer=Chars())
    return monitor
