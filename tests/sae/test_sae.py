"""Tests for featmon_widget.sae: exactness against real SAELens, round trips, and errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from featmon_widget.sae import SparseAutoencoder, load_sae

D_IN = 24
D_SAE = 96
K = 8
TOL = {"atol": 1e-5, "rtol": 1e-5}


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def sl() -> Any:
    """The real sae_lens package (comparison tests skip only if it is not installed)."""
    return pytest.importorskip("sae_lens")


def _random_weights(architecture: str, seed: int, d_in: int = D_IN, d_sae: int = D_SAE):
    """Weights in SAELens layout where a good fraction of features fire on N(0, 1) inputs."""
    g = torch.Generator().manual_seed(seed)
    w = {
        "W_enc": torch.randn(d_in, d_sae, generator=g) / d_in**0.5,
        "b_enc": 0.2 * torch.randn(d_sae, generator=g),
        # rows of varied norm so rescale_acts_by_decoder_norm actually changes the top-k
        "W_dec": torch.randn(d_sae, d_in, generator=g)
        / d_in**0.5
        * (0.3 + 2 * torch.rand(d_sae, 1, generator=g)),
        "b_dec": 0.5 * torch.randn(d_in, generator=g),
    }
    if architecture == "jumprelu":
        # some negative thresholds: SAELens computes relu(pre) * (pre > thr), not pre * (...)
        w["threshold"] = torch.rand(d_sae, generator=g) * 0.8 - 0.2
    return w


def _saelens_sae(
    sl: Any,
    architecture: str,
    seed: int = 0,
    apply_b_dec_to_input: bool = True,
    d_in: int = D_IN,
    **cfg_kwargs: Any,
) -> Any:
    from sae_lens.saes.sae import SAEMetadata

    classes = {
        "standard": (sl.StandardSAE, sl.StandardSAEConfig),
        "jumprelu": (sl.JumpReLUSAE, sl.JumpReLUSAEConfig),
        "topk": (sl.TopKSAE, sl.TopKSAEConfig),
    }
    sae_cls, cfg_cls = classes[architecture]
    hook = cfg_kwargs.pop("hook_name", "blocks.1.hook_resid_post")
    cfg = cfg_cls(
        d_in=d_in,
        d_sae=D_SAE,
        apply_b_dec_to_input=apply_b_dec_to_input,
        metadata=SAEMetadata(hook_name=hook, model_name="toy"),
        **cfg_kwargs,
    )
    sae = sae_cls(cfg)
    with torch.no_grad():
        for name, t in _random_weights(architecture, seed, d_in=d_in).items():
            getattr(sae, name).copy_(t)
    return sae


def _inputs(seed: int, *shape: int, d_in: int = D_IN) -> torch.Tensor:
    return torch.randn(*shape, d_in, generator=torch.Generator().manual_seed(seed))


def _small_sae(architecture: str = "standard", **kwargs: Any) -> SparseAutoencoder:
    w = _random_weights(architecture, 7, d_in=8, d_sae=16)
    if architecture == "topk":
        kwargs.setdefault("k", 4)
    return SparseAutoencoder.from_tensors(**w, architecture=architecture, **kwargs)


def _edit_cfg(path: Path, **changes: Any) -> None:
    cfg_path = path / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    for key, value in changes.items():
        if value is _DELETE:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    cfg_path.write_text(json.dumps(cfg))


_DELETE = object()

CASES = [
    ("standard", {}),
    ("jumprelu", {}),
    ("topk", {"k": K}),
    ("topk", {"k": K, "rescale_acts_by_decoder_norm": True}),
]
CASE_IDS = ["standard", "jumprelu", "topk", "topk-rescale"]


# ------------------------------------------------------------- exactness vs SAELens


@pytest.mark.parametrize("apply_b_dec", [True, False], ids=["bdec_in", "no_bdec_in"])
@pytest.mark.parametrize(("architecture", "extra"), CASES, ids=CASE_IDS)
def test_matches_saelens(
    sl: Any, tmp_path: Path, architecture: str, extra: dict[str, Any], apply_b_dec: bool
) -> None:
    ref = _saelens_sae(sl, architecture, seed=1, apply_b_dec_to_input=apply_b_dec, **extra)
    ref.save_model(tmp_path / "ref")

    ours = load_sae(tmp_path / "ref")
    assert ours.architecture == architecture
    assert (ours.d_in, ours.d_sae) == (D_IN, D_SAE)
    assert ours.k == extra.get("k")
    assert ours.apply_b_dec_to_input is apply_b_dec
    assert ours.name == "ref"
    assert ours.hook_name == "blocks.1.hook_resid_post"
    assert ours.dtype == torch.float32 and ours.device == torch.device("cpu")

    x = _inputs(2, 3, 5)  # extra leading dims
    with torch.no_grad():
        expected = ref.encode(x)
        got = ours.encode(x)
        torch.testing.assert_close(got, expected, **TOL)
        assert got.shape == (3, 5, D_SAE)
        frac = (got > 0).float().mean().item()
        if architecture == "topk":
            assert ((got != 0).sum(-1) <= K).all()
            assert frac > 0.5 * K / D_SAE
        else:
            assert 0.1 < frac < 0.9, frac  # a good fraction fires, but not everything
        torch.testing.assert_close(ours.activation(ours.pre_activations(x)), got, **TOL)

        # decode of the features and of arbitrary dense codes
        torch.testing.assert_close(ours.decode(got), ref.decode(expected), **TOL)
        f = torch.rand(4, D_SAE, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(ours.decode(f), ref.decode(f), **TOL)
        torch.testing.assert_close(ours(x), ref(x), **TOL)

        # our save -> real SAELens load gives the same SAE
        ours.save(tmp_path / "ours")
        back = sl.SAE.load_from_disk(tmp_path / "ours")
        assert type(back) is type(ref)
        assert back.cfg.apply_b_dec_to_input is apply_b_dec
        assert back.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
        torch.testing.assert_close(back.encode(x), got, **TOL)
        torch.testing.assert_close(back.decode(f), ours.decode(f), **TOL)
        again = load_sae(tmp_path / "ours")
        torch.testing.assert_close(again.encode(x), got, **TOL)


def test_jumprelu_keeps_relu_with_negative_thresholds(sl: Any, tmp_path: Path) -> None:
    ref = _saelens_sae(sl, "jumprelu", seed=4)
    ref.save_model(tmp_path)
    ours = load_sae(tmp_path)
    x = _inputs(5, 256)
    with torch.no_grad():
        pre = ours.pre_activations(x)
        # entries where pre * (pre > thr) would be negative: SAELens (and we) give 0 there
        between = (pre > ours.threshold) & (pre < 0)
        assert between.any()
        got = ours.encode(x)
        assert (got[between] == 0).all()
        assert (got >= 0).all()
        torch.testing.assert_close(got, ref.encode(x), **TOL)


@pytest.mark.parametrize("rescale", [False, True])
def test_topk_encode_sparse(sl: Any, tmp_path: Path, rescale: bool) -> None:
    ref = _saelens_sae(sl, "topk", seed=6, k=K, rescale_acts_by_decoder_norm=rescale)
    ref.save_model(tmp_path)
    ours = load_sae(tmp_path)
    x = _inputs(7, 2, 9)
    with torch.no_grad():
        idx, val = ours.encode_sparse(x)
        assert idx.dtype == torch.long and idx.shape == (2, 9, K)
        assert val.shape == (2, 9, K) and val.dtype == ours.dtype
        dense = torch.zeros(2, 9, D_SAE).scatter_(-1, idx, val)
        torch.testing.assert_close(dense, ours.encode(x), atol=0, rtol=0)
        torch.testing.assert_close(dense, ref.encode(x), **TOL)
        # the index set is exactly the top-k of the (rescaled) pre-activations
        pre = ours.pre_activations(x)
        kth = pre.topk(K, dim=-1).values[..., -1:]
        assert (pre.gather(-1, idx) >= kth).all()


def test_topk_values_after_relu_can_be_zero(sl: Any, tmp_path: Path) -> None:
    ref = _saelens_sae(sl, "topk", seed=8, k=K)
    with torch.no_grad():
        ref.b_enc.sub_(3.0)  # most pre-activations negative: some top-k slots relu to 0
    ref.save_model(tmp_path)
    ours = load_sae(tmp_path)
    x = _inputs(9, 64)
    with torch.no_grad():
        idx, val = ours.encode_sparse(x)
        assert (val == 0).any() and (val > 0).any() and (val >= 0).all()
        torch.testing.assert_close(ours.encode(x), ref.encode(x), **TOL)
        dense = torch.zeros(64, D_SAE).scatter_(-1, idx, val)
        torch.testing.assert_close(dense, ours.encode(x), atol=0, rtol=0)


def test_hook_z_sae_accepts_head_shaped_inputs(sl: Any, tmp_path: Path) -> None:
    n_heads, d_head = 4, 6
    ref = _saelens_sae(
        sl, "standard", seed=10, reshape_activations="hook_z", hook_name="blocks.0.attn.hook_z"
    )
    ref.save_model(tmp_path)
    ours = load_sae(tmp_path)
    assert ours.reshape_activations == "hook_z"
    z = _inputs(11, 3, 5, n_heads, d_in=d_head)
    with torch.no_grad():
        expected = ref.encode(z)
        got = ours.encode(z)
        torch.testing.assert_close(got, expected, **TOL)
        torch.testing.assert_close(ours.encode(z.flatten(-2)), expected, **TOL)
        # we return the flattened reconstruction; SAELens restores the head dims
        torch.testing.assert_close(ours.decode(got), ref.decode(expected).flatten(-2), **TOL)


def test_legacy_pre6_topk_config(sl: Any, tmp_path: Path) -> None:
    """A SAELens < 6 layout: hook_point, activation_fn_str='topk', k in kwargs, bool norm."""
    w = _random_weights("standard", 12)
    save_file(w, str(tmp_path / "sae_weights.safetensors"))
    cfg = {
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "torch.float32",
        "device": "cpu",
        "hook_point": "blocks.3.hook_resid_pre",
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 5},
        "apply_b_dec_to_input": False,
        "normalize_activations": False,
        "model_name": "toy",
        "lr": 1e-4,  # runner keys are ignored, as in SAELens
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    ours = load_sae(tmp_path)
    ref = sl.SAE.load_from_disk(tmp_path)
    assert ours.architecture == "topk" and ours.k == 5 == ref.cfg.k
    assert ours.hook_name == "blocks.3.hook_resid_pre"
    x = _inputs(13, 17)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), ref.encode(x), **TOL)
    # the legacy cfg is converted to the SAELens 6 layout when saving
    ours.save(tmp_path / "resaved")
    back = sl.SAE.load_from_disk(tmp_path / "resaved")
    assert back.cfg.metadata.hook_name == "blocks.3.hook_resid_pre"
    with torch.no_grad():
        torch.testing.assert_close(back.encode(x), ours.encode(x), **TOL)


@pytest.mark.parametrize("legacy", [False, True], ids=["v6", "pre6"])
def test_missing_apply_b_dec_defaults_like_saelens(sl: Any, tmp_path: Path, legacy: bool) -> None:
    ref = _saelens_sae(sl, "standard", seed=25, apply_b_dec_to_input=True)
    ref.save_model(tmp_path)
    _edit_cfg(tmp_path, apply_b_dec_to_input=_DELETE)
    if legacy:
        _edit_cfg(tmp_path, metadata=_DELETE, architecture=_DELETE)
    ours = load_sae(tmp_path)
    back = sl.SAE.load_from_disk(tmp_path)
    assert ours.apply_b_dec_to_input is True is back.cfg.apply_b_dec_to_input
    x = _inputs(26, 12)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), back.encode(x), **TOL)


def test_legacy_log_threshold_is_exponentiated(tmp_path: Path) -> None:
    w = _random_weights("jumprelu", 14, d_in=8, d_sae=16)
    w["threshold"] = w["threshold"].abs() + 0.05
    ref = SparseAutoencoder.from_tensors(**w, architecture="jumprelu")
    ref.save(tmp_path)
    w["log_threshold"] = w.pop("threshold").log()
    save_file(w, str(tmp_path / "sae_weights.safetensors"))
    ours = load_sae(tmp_path)
    x = _inputs(15, 32, d_in=8)
    torch.testing.assert_close(ours.encode(x), ref.encode(x), **TOL)


# ------------------------------------------------------------------ from_tensors / save


@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "topk"])
def test_from_tensors_formulas(architecture: str, apply_b_dec: bool) -> None:
    w = _random_weights(architecture, 16, d_in=8, d_sae=16)
    k = 4 if architecture == "topk" else None
    sae = SparseAutoencoder.from_tensors(
        **w, architecture=architecture, k=k, apply_b_dec_to_input=apply_b_dec, name="toy"
    )
    assert sae.name == "toy" and sae.cfg["architecture"] == architecture
    x = _inputs(17, 10, d_in=8)
    sae_in = x - w["b_dec"] if apply_b_dec else x
    pre = sae_in @ w["W_enc"] + w["b_enc"]
    if architecture == "standard":
        expected = pre.relu()
    elif architecture == "jumprelu":
        expected = torch.where(pre > w["threshold"], pre.relu(), torch.zeros_like(pre))
    else:
        top = pre.topk(4, dim=-1)
        expected = torch.zeros_like(pre).scatter_(-1, top.indices, top.values.relu())
    torch.testing.assert_close(sae.pre_activations(x), pre, **TOL)
    torch.testing.assert_close(sae.encode(x), expected, **TOL)
    torch.testing.assert_close(sae.decode(expected), expected @ w["W_dec"] + w["b_dec"], **TOL)
    # inputs are copied, not aliased
    w["W_enc"].zero_()
    assert sae.W_enc.abs().sum() > 0
    assert not any(p.requires_grad for p in sae.parameters())


@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "topk"])
def test_from_tensors_save_loads_in_saelens(sl: Any, tmp_path: Path, architecture: str) -> None:
    sae = _small_sae(architecture, hook_name="blocks.2.hook_mlp_out")
    out = sae.save(tmp_path / "saved")
    assert sorted(p.name for p in out.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    back = sl.SAE.load_from_disk(out)
    assert back.cfg.architecture() == architecture
    assert back.cfg.metadata.hook_name == "blocks.2.hook_mlp_out"
    x = _inputs(18, 6, d_in=8)
    with torch.no_grad():
        torch.testing.assert_close(back.encode(x), sae.encode(x), **TOL)
    assert load_sae(out).hook_name == "blocks.2.hook_mlp_out"


def test_encode_sparse_rejected_for_dense_architectures() -> None:
    for architecture in ("standard", "jumprelu"):
        sae = _small_sae(architecture)
        with pytest.raises(NotImplementedError, match=architecture):
            sae.encode_sparse(torch.zeros(2, 8))


# ------------------------------------------------------------------------- dtype/device


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("architecture", ["standard", "jumprelu"])
def test_dtype_cast_matches_saelens(
    sl: Any, tmp_path: Path, dtype: torch.dtype, architecture: str
) -> None:
    ref = _saelens_sae(sl, architecture, seed=19)
    ref.save_model(tmp_path)
    name = str(dtype).removeprefix("torch.")
    ours = load_sae(tmp_path, dtype=dtype)
    ref_cast = sl.SAE.load_from_disk(tmp_path, dtype=name)
    assert ours.dtype == dtype and all(p.dtype == dtype for p in ours.parameters())
    x = _inputs(20, 33)  # float32 input is cast to the SAE dtype, as in SAELens
    with torch.no_grad():
        got = ours.encode(x)
        assert got.dtype == dtype
        torch.testing.assert_close(got, ref_cast.encode(x))
        torch.testing.assert_close(ours.decode(got), ref_cast.decode(got))
    # dtype given as a string works too
    assert load_sae(tmp_path, dtype=name).dtype == dtype


def test_cfg_dtype_is_default_and_save_records_dtype(tmp_path: Path) -> None:
    sae = _small_sae("topk", dtype=torch.bfloat16)
    sae.save(tmp_path)
    assert json.loads((tmp_path / "cfg.json").read_text())["dtype"] == "bfloat16"
    loaded = load_sae(tmp_path)
    assert loaded.dtype == torch.bfloat16
    assert load_sae(tmp_path, dtype="float32").dtype == torch.float32
    x = _inputs(21, 4, d_in=8).double()
    assert loaded.encode(x).dtype == torch.bfloat16


def test_device_argument(tmp_path: Path) -> None:
    _small_sae().save(tmp_path)
    assert load_sae(tmp_path, device="cpu").device == torch.device("cpu")
    assert load_sae(tmp_path, device=torch.device("cpu")).device == torch.device("cpu")
    if torch.cuda.is_available():
        sae = load_sae(tmp_path, device="cuda", dtype=torch.bfloat16)
        assert sae.device.type == "cuda" and sae.dtype == torch.bfloat16
        assert sae.encode(torch.randn(3, 8, device="cuda")).device.type == "cuda"


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _small_sae("jumprelu").save(tmp_path)

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pickle-based loading used")

    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    assert load_sae(tmp_path).architecture == "jumprelu"


# -------------------------------------------------------------------------------- errors


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    _small_sae("standard").save(tmp_path / "sae")
    return tmp_path / "sae"


@pytest.mark.parametrize("arch", ["gated", "banana", None])
def test_unknown_architecture(saved: Path, arch: str | None) -> None:
    _edit_cfg(saved, architecture=arch)
    with pytest.raises(ValueError, match=rf"architecture={arch!r}"):
        load_sae(saved)


@pytest.mark.parametrize(
    "mode", ["expected_average_only_in", "layer_norm", "constant_norm_rescale", "whatever"]
)
def test_unsupported_normalize_activations(saved: Path, mode: str) -> None:
    _edit_cfg(saved, normalize_activations=mode)
    with pytest.raises(ValueError, match=rf"normalize_activations='{mode}'"):
        load_sae(saved)


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"reshape_activations": "hook_q"}, "reshape_activations='hook_q'"),
        ({"dtype": "int8"}, "dtype='int8'"),
        ({"d_in": "8"}, "'d_in'"),
        ({"d_sae": _DELETE}, "'d_sae'"),
        ({"apply_b_dec_to_input": "yes"}, "apply_b_dec_to_input"),
        ({"rescale_acts_by_decoder_norm": True}, "rescale_acts_by_decoder_norm=True"),
        ({"activation_fn": "tanh-relu"}, "activation_fn='tanh-relu'"),
        ({"finetuning_scaling_factor": True}, "finetuning_scaling_factor=True"),
    ],
)
def test_unsupported_or_bad_cfg_values(saved: Path, changes: dict[str, Any], pattern: str) -> None:
    _edit_cfg(saved, **changes)
    with pytest.raises(ValueError, match=pattern):
        load_sae(saved)


@pytest.mark.parametrize("k", [None, 0, 17, 2.5])
def test_topk_bad_k(tmp_path: Path, k: Any) -> None:
    _small_sae("topk").save(tmp_path)
    _edit_cfg(tmp_path, k=k)
    with pytest.raises(ValueError, match=rf"k={k!r}"):
        load_sae(tmp_path)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        load_sae(tmp_path / "nope")
    _small_sae().save(tmp_path / "a")
    (tmp_path / "a" / "cfg.json").unlink()
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load_sae(tmp_path / "a")
    _small_sae().save(tmp_path / "b")
    (tmp_path / "b" / "sae_weights.safetensors").unlink()
    (tmp_path / "b" / "sae_weights.pt").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="sae_weights.safetensors"):
        load_sae(tmp_path / "b")


def test_wrong_shape(saved: Path) -> None:
    w = _random_weights("standard", 22, d_in=8, d_sae=16)
    w["W_enc"] = w["W_enc"].T.contiguous()
    save_file(w, str(saved / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match=r"'W_enc' has shape \[16, 8\], expected \[8, 16\]"):
        load_sae(saved)


def test_cfg_dims_disagree_with_weights(saved: Path) -> None:
    _edit_cfg(saved, d_sae=32)
    with pytest.raises(ValueError, match=r"'W_enc' has shape \[8, 16\], expected \[8, 32\]"):
        load_sae(saved)


def test_missing_and_unexpected_tensors(tmp_path: Path) -> None:
    w = _random_weights("jumprelu", 23, d_in=8, d_sae=16)
    _small_sae("jumprelu").save(tmp_path)
    weights = str(tmp_path / "sae_weights.safetensors")
    save_file({k: v for k, v in w.items() if k != "threshold"}, weights)
    with pytest.raises(ValueError, match="missing tensor 'threshold'"):
        load_sae(tmp_path)
    save_file({**w, "W_enc_mag": torch.zeros(8, 16)}, weights)
    with pytest.raises(ValueError, match="unexpected tensors \\['W_enc_mag'\\]"):
        load_sae(tmp_path)
    save_file({**w, "scaling_factor": torch.full((16,), 2.0)}, weights)
    with pytest.raises(ValueError, match="scaling_factor"):
        load_sae(tmp_path)
    # an all-ones scaling_factor is a no-op and SAELens drops it too
    save_file({**w, "scaling_factor": torch.ones(16)}, weights)
    assert load_sae(tmp_path).architecture == "jumprelu"


def test_corrupt_files(saved: Path) -> None:
    (saved / "sae_weights.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="sae_weights.safetensors"):
        load_sae(saved)
    (saved / "cfg.json").write_text("{not json")
    with pytest.raises(ValueError, match="cfg.json"):
        load_sae(saved)


def test_from_tensors_validation() -> None:
    w = _random_weights("standard", 24, d_in=8, d_sae=16)
    with pytest.raises(ValueError, match=r"'W_dec' has shape \[8, 16\], expected \[16, 8\]"):
        SparseAutoencoder.from_tensors(w["W_enc"], w["b_enc"], w["W_dec"].T, w["b_dec"])
    with pytest.raises(ValueError, match="threshold"):
        SparseAutoencoder.from_tensors(**w, architecture="jumprelu")
    with pytest.raises(ValueError, match="k=None"):
        SparseAutoencoder.from_tensors(**w, architecture="topk")
    with pytest.raises(ValueError, match="architecture='gated'"):
        SparseAutoencoder.from_tensors(**w, architecture="gated")


def test_encode_rejects_wrong_width() -> None:
    sae = _small_sae()
    with pytest.raises(ValueError, match=r"\[\.\.\., 8\].*\[3, 9\]"):
        sae.encode(torch.zeros(3, 9))


def test_monitor_accepts_a_real_saelens_sae(sl: Any) -> None:
    """A `sae_lens.SAE` is SAE-like: the monitor takes its width and records its features."""
    from featmon_widget import FeatureMonitor

    sae = _saelens_sae(sl, "standard", seed=3).eval()
    monitor = FeatureMonitor.for_sae(sae, compile=False)
    assert monitor.d_sae == D_SAE
    model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Identity())
    x = _inputs(5, 2, 6)
    with monitor.attach(model, "0", sae), torch.no_grad():
        model(x)
    assert monitor.state.errors == 0 and monitor.state.total_tokens == 12
    with torch.no_grad():
        expected = sae.encode(x).reshape(-1, D_SAE).double()
    rows = monitor.get_statistics().features
    assert [r.active_count for r in rows] == (expected > 0).sum(0).tolist()
    assert [r.max for r in rows] == expected.max(0).values.tolist()


def test_hostile_cfg_shapes_are_value_errors(tmp_path: Path) -> None:
    """A non-object activation_fn_kwargs raised AttributeError, a deeply
    nested cfg.json RecursionError."""
    _small_sae().save(tmp_path / "a")
    _edit_cfg(tmp_path / "a", activation_fn="topk", activation_fn_kwargs=[5],
              sae_lens_version=_DELETE, metadata=_DELETE, architecture=_DELETE)
    with pytest.raises(ValueError, match="activation_fn_kwargs must be an object, got list"):
        load_sae(tmp_path / "a")
    _small_sae().save(tmp_path / "b")
    (tmp_path / "b" / "cfg.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        load_sae(tmp_path / "b")
