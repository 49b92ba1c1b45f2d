"""The uniform sample of each feature's activating tokens (`monitor/record/samples.py`): every
sampled token is a real activating token with its true value, the sample is uniform (chi-square
over seeds), reproducible, not the top examples' distribution, cleared by resets, carried by
save / load and merged across ranks exactly; the C kernel and the torch path agree."""

import dataclasses
import math

import pytest
import torch

from featmon_widget import FeatureMonitor
from featmon_widget.monitor.record import samples as samples_module
from featmon_widget.monitor.record.samples import (
    EMPTY_KEY,
    feature_keys,
    pack_records,
    token_keys,
    union_rule,
)

F = 40


def _monitor(native: bool, **config) -> FeatureMonitor:
    config = {"samples_per_feature": 3, "context_window": 2, **config}
    return FeatureMonitor(F, compile=False, native=native, **config)


def _dense_feed(dtype=torch.float32, seed=0):
    """Two forwards of dense features (half the values active), a mask and token ids."""
    g = torch.Generator().manual_seed(seed)
    feeds = []
    for batch, tokens in ((3, 7), (2, 5)):
        acts = (torch.randn(batch, tokens, F, generator=g) * 0.7).to(dtype)
        acts.view(-1)[::53] = float("nan")
        mask = (torch.rand(batch, tokens, generator=g) > 0.25).long()
        ids = torch.randint(0, 1000, (batch, tokens), generator=g)
        feeds.append((acts, mask, ids))
    return feeds


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_sampled_token_is_a_real_activating_token_with_its_true_value(native, dtype):
    threshold = 0.2
    monitor = _monitor(native, threshold=threshold)
    feeds = _dense_feed(dtype)
    for i, (acts, mask, ids) in enumerate(feeds):
        monitor.on_activation(acts, request_id=f"r{i}", mask=mask, token_ids=ids)
    held = 0
    for f in range(F):
        response = monitor.get_examples(f, kind="sample")
        assert response.kind == "sample"
        for e in response.examples:
            acts, mask, ids = feeds[int(e.request_id[1])]
            row = acts[e.row, :, f].to(torch.float32)
            at = [t for t in range(row.shape[0]) if row[t] == e.value and mask[e.row, t]]
            assert at, (f, e)  # a real token of that row holds the value, not padding
            assert e.value > threshold and math.isfinite(e.value)
            assert e.token_ids[e.index] in {int(ids[e.row, t]) for t in at}
            assert e.activations[e.index] == pytest.approx(e.value, rel=1e-2)
            held += 1
    assert held == 3 * F  # every feature fired on more than 3 tokens


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_native_and_torch_paths_agree_exactly(dtype):
    def run(native):
        m = _monitor(native, threshold=0.1)
        for i, (acts, mask, ids) in enumerate(_dense_feed(dtype, seed=3)):
            m.on_activation(acts, request_id=f"r{i}", mask=mask, token_ids=ids)
        g = torch.Generator().manual_seed(4)
        indices = torch.randint(-2, F + 3, (2, 6, 9), generator=g)
        values = torch.randn(2, 6, 9, generator=g)
        m.on_sparse_activation(indices, values, request_id="s",
                               token_ids=torch.randint(0, 9, (2, 6), generator=g))
        s = m._recording.samples
        return [m.get_examples(f, kind="sample") for f in range(F)], s.key.clone()

    (on, keys_on), (off, keys_off) = run(True), run(False)
    assert torch.equal(keys_on, keys_off)
    # As for the top examples, a TopK forward's window activations are the C merge's reads of
    # the TopK lists (0 where a token does not list the feature) and the torch merge's centre
    # only: compared at the centre for those.
    for a, b in zip(on, off, strict=True):
        for x, y in zip(a.examples, b.examples, strict=True):
            if x.request_id == "s":
                assert x.activations[x.index] == y.activations[y.index]
                x, y = dataclasses.replace(x, activations=[]), dataclasses.replace(
                    y, activations=[])
            assert x == y
        assert len(a.examples) == len(b.examples)


def test_the_keys_are_the_documented_hash():
    m = _monitor(True, samples_per_feature=50)
    acts = torch.rand(1, 30, F) + 0.1  # every token active
    m.on_activation(acts)
    keys = feature_keys(token_keys(0, 0, 0, 30, torch.device("cpu"))[:, None],
                        torch.arange(F)).t()
    assert torch.equal(m._recording.samples.key[:, :30], keys.sort(dim=1).values)
    assert bool((m._recording.samples.key[:, 30:] == EMPTY_KEY).all())


def test_the_sample_is_uniform_over_seeds():
    """Feature 0 fires on 10 tokens over 5 forwards; over 400 seeds each token is chosen
    (k = 2) about 80 times: chi-square with 9 degrees of freedom below its 0.1% point."""
    n, k, seeds = 10, 2, 400
    chosen = torch.zeros(n)
    acts = torch.zeros(5, 1, 2, 2)
    acts[..., 0] = (torch.arange(10, dtype=torch.float32) + 1).view(5, 1, 2)
    for seed in range(seeds):
        m = FeatureMonitor(2, compile=False, samples_per_feature=k, sample_seed=seed,
                           examples_per_feature=1, context_window=0, history_size=1,
                           health_every=0)
        for forward in acts:
            m.on_activation(forward)
        for e in m.get_examples(0, kind="sample").examples:
            chosen[int(e.value) - 1] += 1
    expected = seeds * k / n
    chi2 = float(((chosen - expected) ** 2 / expected).sum())
    assert chosen.sum() == seeds * k
    assert chi2 < 27.88, chosen.tolist()


def test_the_same_seed_gives_the_same_sample_and_another_seed_another():
    def sample(seed):
        m = _monitor(True, sample_seed=seed)
        for acts, mask, ids in _dense_feed():
            m.on_activation(acts, mask=mask, token_ids=ids)
        return [m.get_examples(f, kind="sample") for f in range(F)]

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_samples_span_the_range_where_the_top_examples_hold_only_the_highest():
    """Values 1..200 on one token each: the top examples are the highest; the sample's mean is
    near the middle, with low values in it."""
    values = []
    for seed in range(10):
        m = FeatureMonitor(1, compile=False, examples_per_feature=8, samples_per_feature=8,
                           sample_seed=seed, context_window=0)
        m.on_activation(torch.randperm(200, generator=torch.Generator().manual_seed(seed))
                        .float().add(1).view(200, 1, 1))
        top = [e.value for e in m.get_examples(0).examples]
        assert top == [200.0 - i for i in range(8)]
        values += [e.value for e in m.get_examples(0, kind="sample").examples]
    assert len(values) == 80 and len(set(values)) > 40
    assert min(values) < 50 and 70 < sum(values) / len(values) < 130


def test_a_reset_or_threshold_change_clears_and_the_threshold_is_respected():
    m = _monitor(True, threshold=0.5)
    acts = torch.linspace(0, 1, 21).view(1, 21, 1).expand(1, 21, F).contiguous()
    m.on_activation(acts)
    assert all(e.value > 0.5 for f in range(F) for e in m.get_examples(f, kind="sample").examples)
    assert len(m.get_examples(0, kind="sample").examples) == 3
    m.reset_statistics()
    assert m.get_examples(0, kind="sample").examples == []
    m.on_activation(acts)
    m.configure(threshold=0.9)
    assert m.get_examples(0, kind="sample").examples == []
    m.on_activation(acts)
    assert all(e.value > 0.9 for e in m.get_examples(0, kind="sample").examples)


def test_off_bad_kind_and_k():
    m = _monitor(True, samples_per_feature=0)
    m.on_activation(torch.rand(2, 3, F))
    assert m.get_examples(1, kind="sample").examples == []
    with pytest.raises(ValueError, match="'best'"):
        m.get_examples(1, kind="best")
    m.configure(samples_per_feature=2)
    m.on_activation(torch.rand(2, 3, F) + 0.1)
    assert len(m.get_examples(1, k=1, kind="sample").examples) == 1
    with pytest.raises(ValueError, match="k"):
        m.get_examples(1, k=3, kind="sample")


def test_memory_is_260_bytes_a_feature_with_the_defaults():
    m = FeatureMonitor(1024, compile=False)
    assert m.state.memory_bytes["samples"] == 260 * 1024


def test_save_and_load_carry_the_sample_and_its_counter(tmp_path):
    feeds = _dense_feed()
    m = _monitor(True)
    m.on_activation(feeds[0][0], mask=feeds[0][1], token_ids=feeds[0][2])
    m.save(tmp_path / "s")
    loaded = FeatureMonitor.load(tmp_path / "s", compile=False)
    assert [loaded.get_examples(f, kind="sample") for f in range(F)] == \
        [m.get_examples(f, kind="sample") for f in range(F)]
    for monitor in (m, loaded):  # the counter goes on where it was: the same keys
        monitor.on_activation(feeds[1][0], token_ids=feeds[1][2])
    assert torch.equal(loaded._recording.samples.key, m._recording.samples.key)


def test_names_the_sample_holds_survive_the_request_name_cap(monkeypatch):
    from featmon_widget.monitor.record import requests as requests_module

    monkeypatch.setattr(requests_module, "MAX_REQUEST_NAMES", 4)
    m = FeatureMonitor(2, compile=False, examples_per_feature=1, samples_per_feature=2)
    for i in range(30):
        m.on_activation(torch.full((1, 2), 1.0), request_id=f"req-{i}")
    names = {e.request_id for e in m.get_examples(0, kind="sample").examples}
    assert len(names) == 2 and all(n.startswith("req-") for n in names)


def test_ranks_merge_into_a_uniform_sample_of_the_union(monkeypatch):
    """Three ranks record different forwards; the union rule (fed in chunks of whole features,
    as sync does) keeps the k smallest keys of all their activating tokens, every one real."""
    k, ranks = 3, 3
    monitors, feeds = [], []
    for rank in range(ranks):
        monkeypatch.setattr(samples_module, "process_rank", lambda r=rank: r)
        m = _monitor(True, samples_per_feature=k)
        acts = torch.randn(2, 4, F, generator=torch.Generator().manual_seed(rank))
        m.on_activation(acts)
        monitors.append(m)
        feeds.append(acts)
    rule = union_rule(k, 5)
    shares = [m._recording.samples.sync_state()["record"] for m in monitors]
    merged = []
    unit = rule.unit
    for start in range(0, shares[0].numel(), 2 * unit):  # two features a chunk
        piece = slice(start, start + 2 * unit)
        combined = rule.start({"record": shares[0][piece]})
        for share in shares[1:]:
            combined = rule.combine(combined, {"record": share[piece]})
        merged.append(combined["record"])
    monitors[0]._recording.samples.take_remote({"record": torch.cat(merged)})
    for f in range(F):
        everything = []
        for rank, acts in enumerate(feeds):
            flat = acts.reshape(-1, F)[:, f]
            keys = feature_keys(token_keys(0, rank, 0, 8, torch.device("cpu")),
                                torch.tensor(f))
            everything += [(int(key), float(v)) for key, v in zip(keys, flat, strict=True)
                           if v > 0]
        want = sorted(everything)[:k]
        view = monitors[0]._recording.samples.record_view(torch.tensor([f]))
        assert view["key"][0].tolist() == [key for key, _ in want]
        assert view["value"][0].tolist() == [v for _, v in want]
    got = monitors[0].get_examples(0, kind="sample").examples
    assert len(got) == k and all(e.value > 0 for e in got)


def test_records_pack_and_unpack_exactly():
    m = _monitor(True)
    acts, mask, ids = _dense_feed()[0]
    m.on_activation(acts, mask=mask, token_ids=ids)
    s = m._recording.samples
    packed = pack_records(s.fixed_tensors())
    back = samples_module.unpack_records(packed, 5)
    for name, t in s.fixed_tensors().items():
        assert torch.equal(back[name].contiguous().view(torch.uint8),
                           t.contiguous().view(torch.uint8)), name
