"""Watch-lists: callbacks get exactly the tokens above threshold (none missed at the end of a
burst, none twice), overflow is counted, and `stopping_criteria` stops HF generate on the row
where the watched feature fired and not on the others. The delivery thread runs on a
`ManualClock` (the `manual_clock` fixture): time moves only when a test advances it."""

import threading

import pytest
import torch

from featmon_widget import FeatureMonitor

D = 16


def oracle(forwards, features, above):
    """Every (feature, value, request, row, position) above `above`, in recording order."""
    hits = []
    for request, acts, mask in forwards:
        b, t, _ = acts.shape
        seen = [0] * b
        for row in range(b):
            for tok in range(t):
                if not mask[row, tok]:
                    continue
                for f in features:
                    v = float(acts[row, tok, f])
                    if v > above:
                        hits.append((f, v, request, row, seen[row]))
                seen[row] += 1
    return hits


def test_callbacks_get_exactly_the_hits_in_order_after_a_burst(manual_clock):
    monitor = FeatureMonitor(D, compile=False, throttle_ms=30)
    got, thread = [], []
    with manual_clock.settled():  # the watch starts the delivery thread
        watch = monitor.watch([2, 7], above=1.2, callback=lambda h: (
            got.append(h), thread.append(threading.current_thread().name)))
    g = torch.Generator().manual_seed(0)
    forwards = []
    for i in range(40):  # a burst: no time passes
        acts = torch.randn(2, 6, D, generator=g)
        acts[0, 1, 2] = float("nan")  # never a hit
        mask = torch.ones(2, 6, dtype=torch.long)
        mask[1, :2] = 0
        request = f"r{i % 3}"
        monitor.on_activation(acts, request_id=request, mask=mask)
        forwards.append((request, acts, mask))
    want = oracle(forwards, [2, 7], 1.2)
    # Positions continue per request: renumber the oracle the same way.
    next_pos: dict = {}
    expected = []
    for request, acts, mask in forwards:
        base = next_pos.get(request, [0, 0])
        part = oracle([(request, acts, mask)], [2, 7], 1.2)
        expected += [(f, v, r, row, base[row] + p) for f, v, r, row, p in part]
        next_pos[request] = [base[row] + int(mask[row].sum()) for row in range(2)]
    assert len(want) == len(expected) > 50
    assert got == []  # the interval has not ended: nothing delivered yet
    manual_clock.advance(0.03)  # the trailing edge delivers them all
    assert len(got) == len(expected)
    manual_clock.advance(1.0)  # and nothing more arrives
    assert [(h.feature, h.value, h.request_id, h.row, h.position) for h in got] == [
        (f, pytest.approx(v), r, row, p) for f, v, r, row, p in expected]
    assert set(thread) == {"featmon-watch"}  # its own worker, not the delivery thread
    assert watch.hits == len(expected) and watch.dropped == 0
    assert monitor.state.watch_hits == len(expected)


def test_without_a_callback_hits_wait_in_recent_and_cancel_delivers_the_last(manual_clock):
    monitor = FeatureMonitor(D, compile=False, throttle_ms=10)
    with manual_clock.settled():
        watch = monitor.watch(3, above=0.0)
    monitor.on_activation(torch.full((4, D), 1.0))
    manual_clock.advance(0.01)
    assert len(watch.recent) == 4
    monitor.on_activation(torch.full((2, D), 1.0))
    watch.cancel()
    manual_clock.advance(0.01)
    assert len(watch.recent) == 6
    monitor.on_activation(torch.full((2, D), 1.0))  # cancelled: not watched any more
    manual_clock.advance(1.0)
    assert len(watch.recent) == 6 and watch.active is False


def test_overflow_between_two_reads_is_counted_not_hidden(manual_clock):
    monitor = FeatureMonitor(D, compile=False, throttle_ms=1500)
    got = []
    with manual_clock.settled():
        watch = monitor.watch(list(range(D)), above=-1.0, callback=got.append)
    manual_clock.advance(1.5)  # past the watch's own first delivery
    with manual_clock.settled():
        monitor.on_activation(torch.zeros(1, D))  # the leading edge delivers at once
    assert len(got) == D
    monitor.on_activation(torch.zeros(300, D))  # 4,800 hits before the next read (capacity 4,096)
    assert len(got) == D  # not before the interval ends
    manual_clock.advance(1.5)
    assert len(got) == D + watch.capacity
    assert watch.dropped == 300 * D - watch.capacity
    assert watch.hits == 301 * D


def test_watch_arguments_are_checked():
    monitor = FeatureMonitor(D, compile=False)
    with pytest.raises(ValueError, match="0..15"):
        monitor.watch([D])
    with pytest.raises(ValueError, match="one per feature"):
        monitor.watch([1, 2], above=[1.0])
    with pytest.raises(TypeError, match="callable"):
        monitor.watch([1], callback=3)
    with pytest.raises(ValueError, match="at least one"):
        monitor.watch([])


# ---- stopping generation ----------------------------------------------------------------------

transformers = pytest.importorskip("transformers")
VOCAB, D_MODEL = 50, 32


class TokenDetector:
    """An SAE-like object on the embedding output: feature 0 fires (1.0) exactly on `token`."""

    d_sae = 4

    def __init__(self, embedding: torch.Tensor, token: int) -> None:
        self.direction = embedding[token] / embedding[token].norm()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        cos = (x @ self.direction) / x.norm(dim=-1).clamp_min(1e-9)
        return torch.stack([cos, -cos, cos * 0, cos * 0], -1)


def test_stopping_criteria_stops_the_row_where_the_feature_fired():
    prompts = torch.tensor([[5, 9, 13, 17], [22, 26, 30, 34]])
    # HF fills a finished row with padding only when the generation has an EOS token (one this
    # model never produces here); without one, every row runs until all have stopped.
    settings = dict(max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=VOCAB - 1)
    # A random tiny GPT-2 on which row 0 soon generates a token that row 1 never sees and no
    # prompt holds (the first seed that gives one; deterministic).
    for seed in range(50):
        torch.manual_seed(seed)
        config = transformers.GPT2Config(n_layer=2, n_embd=D_MODEL, n_head=2,
                                         vocab_size=VOCAB, n_positions=64, bos_token_id=None,
                                         eos_token_id=None, pad_token_id=0)
        gpt2 = transformers.GPT2LMHeadModel(config).eval()
        with torch.no_grad():
            free = gpt2.generate(prompts, **settings)
        seen_by_row1 = set(free[1].tolist())
        found = [(i, t) for i, t in enumerate(free[0, 4:10].tolist())
                 if t not in seen_by_row1 and t not in prompts[0].tolist() and t != 0]
        if found and VOCAB - 1 not in free.tolist()[0] + free.tolist()[1]:
            step, token = found[0]
            break
    else:
        pytest.fail("no seed gave a usable generation")
    detector = TokenDetector(gpt2.transformer.wte.weight.detach(), token)
    monitor = FeatureMonitor(4, compile=False)
    watch = monitor.watch(0, above=0.999)
    with monitor.attach(gpt2, "transformer.wte", detector), torch.no_grad():
        stopped = gpt2.generate(prompts, stopping_criteria=monitor.stopping_criteria(watch),
                                **settings)
    # Row 0: the forward fed `token` fires; the token it produced is the row's last.
    last = 4 + step + 1
    assert stopped[0, : last + 1].tolist() == free[0, : last + 1].tolist()
    assert (stopped[0, last + 1:] == 0).all() and stopped.shape[1] > last + 1
    assert stopped[1].tolist() == free[1].tolist()  # the other row ran to the end
    assert watch.rows_fired.tolist() == [True, False]


def test_a_raising_callback_loses_nothing_for_itself_or_other_watches(manual_clock):
    monitor = FeatureMonitor(D, compile=False, throttle_ms=10)
    calls, second = [], []

    def raising(hit):
        calls.append(hit)
        raise RuntimeError("user bug")

    with manual_clock.settled():
        first = monitor.watch([3], above=0.5, callback=raising)
        other = monitor.watch([3], above=0.5, callback=second.append)
    acts = torch.zeros(20, D)
    acts[:, 3] = 1.0  # 20 hits for each watch
    monitor.on_activation(acts)
    with pytest.warns(RuntimeWarning, match="watch callback raised"):
        manual_clock.advance(0.01)
    assert len(calls) == 20 and len(second) == 20
    assert first.errors == 20 and "user bug" in first.last_error
    assert other.errors == 0 and other.dropped == first.dropped == 0


def test_a_monitor_holds_a_bounded_number_of_watches():
    from featmon_widget.monitor.oversight.component import MAX_WATCHES

    monitor = FeatureMonitor(8, compile=False)
    watches = [monitor.watch(i % 8) for i in range(MAX_WATCHES)]
    with pytest.raises(ValueError, match=f"at most {MAX_WATCHES} active watches"):
        monitor.watch(0)
    assert len(monitor._recording.watch_set.watches) == MAX_WATCHES  # nothing registered
    watches[0].cancel()
    monitor.watch(3)  # room again
    acts = torch.zeros(1, 8)
    acts[0, 3] = 1.0
    monitor.on_activation(acts)
    assert watches[3].hits == 1 and watches[-1].hits == 0 and watches[0].hits == 0
    monitor.close()
