"""Fixtures of the model-hook tests: eager statistics, a tiny random GPT-2 and its prompt."""

from __future__ import annotations

import pytest
import torch
from hook_reference import (
    D_MODEL,
    LEFT_PADS,
    PAD,
    PROMPT_LEN,
    VOCAB,
)
from torch import nn


@pytest.fixture(autouse=True)
def _eager_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATMON_COMPILE", "0")


@pytest.fixture(scope="module")
def gpt2() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=D_MODEL, n_head=2, vocab_size=VOCAB, n_positions=64,
        bos_token_id=None, eos_token_id=None, pad_token_id=PAD,
    )
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture
def prompt() -> tuple[torch.Tensor, torch.Tensor]:
    """Batch 2; row 0 is left-padded (LEFT_PADS pad tokens), row 1 is all real tokens."""
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(1, VOCAB, (2, PROMPT_LEN), generator=g)
    mask = torch.ones(2, PROMPT_LEN, dtype=torch.long)
    ids[0, :LEFT_PADS] = PAD
    mask[0, :LEFT_PADS] = 0
    return ids, mask
