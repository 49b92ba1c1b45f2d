"""`load_sae` on EleutherAI sparsify and dictionary_learning checkpoints, written and encoded by
the real libraries: our features equal theirs on the same input."""

import json
from pathlib import Path

import pytest
import torch

from featmon_widget import FeatureMonitor, load_sae

D_IN, D_SAE, K = 16, 64, 6
sparsify = pytest.importorskip("sparsify")
dictionary_learning = pytest.importorskip("dictionary_learning")


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Random weights and biases everywhere (fresh modules start with zero biases, which
    would hide a bias applied in the wrong place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def inputs(seed: int = 0) -> torch.Tensor:
    return torch.randn(3, 7, D_IN, generator=torch.Generator().manual_seed(seed)) * 2


def assert_same_features(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    torch.testing.assert_close(ours.reshape(-1, D_SAE), theirs.reshape(-1, D_SAE), rtol=1e-5,
                               atol=1e-5)
    assert ((ours.reshape(-1, D_SAE) > 0) == (theirs.reshape(-1, D_SAE) > 0)).all()


# ---- sparsify -------------------------------------------------------------------------------


def sparsify_coder(tmp_path: Path, name: str = "layers.1", **cfg) -> tuple[Path, object]:
    config = sparsify.SparseCoderConfig(k=K, num_latents=D_SAE, **cfg)
    coder = sparsify.SparseCoder(D_IN, config)
    randomize(coder, 1)
    coder.save_to_disk(tmp_path / name)
    return tmp_path / name, coder


def sparsify_features(coder, x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(-1, D_IN)
    with torch.no_grad():
        out = coder.encode(flat)
    return torch.zeros(flat.shape[0], D_SAE).scatter_(-1, out.top_indices, out.top_acts)


@pytest.mark.parametrize("cfg", [{}, {"transcode": True}, {"skip_connection": True}])
def test_sparsify_features_equal_the_library(tmp_path, cfg):
    folder, coder = sparsify_coder(tmp_path, **cfg)
    sae = load_sae(folder)
    assert (sae.architecture, sae.k, sae.d_in, sae.d_sae) == ("topk", K, D_IN, D_SAE)
    assert sae.hook_name == "layers.1"
    meta = sae.cfg["metadata"]
    assert meta["format"] == "sparsify"
    assert meta["reconstructs_input"] is not (bool(cfg))
    x = inputs()
    with torch.no_grad():
        assert_same_features(sae.encode(x), sparsify_features(coder, x))


def test_a_sparsify_run_folder_names_its_hook_points(tmp_path):
    sparsify_coder(tmp_path / "run", "layers.1")
    sparsify_coder(tmp_path / "run", "layers.2")
    with pytest.raises(ValueError, match=r"2 hook point\(s\) \(layers\.1, layers\.2\)"):
        load_sae(tmp_path / "run")


def test_sparsify_groupmax_and_bad_shapes_are_clear_errors(tmp_path):
    folder, _ = sparsify_coder(tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "activation": "groupmax"}))
    with pytest.raises(ValueError, match="activation 'groupmax' is not supported"):
        load_sae(folder)
    (folder / "cfg.json").write_text(json.dumps({**cfg, "d_in": D_IN + 1}))
    with pytest.raises(ValueError, match="'encoder.weight' has shape"):
        load_sae(folder)


# ---- dictionary_learning --------------------------------------------------------------------


def save_dictionary(tmp_path: Path, dictionary, dict_class: str, **trainer) -> Path:
    """The way dictionary_learning's `trainSAE` saves: a CPU state dict in `ae.pt`, the
    trainer's config in `config.json`."""
    folder = tmp_path / dict_class
    folder.mkdir()
    torch.save({k: v.cpu() for k, v in dictionary.state_dict().items()}, folder / "ae.pt")
    config = {"trainer": {"dict_class": dict_class, "activation_dim": D_IN,
                          "dict_size": D_SAE, "layer": 3, "lm_name": "tiny-gpt2",
                          "submodule_name": "resid_post_layer_3", **trainer}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def dictionary_cases():
    from dictionary_learning import AutoEncoder, JumpReluAutoEncoder
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    def jumprelu():
        ae = JumpReluAutoEncoder(D_IN, D_SAE)
        randomize(ae, 2)
        with torch.no_grad():
            ae.threshold.copy_(torch.rand(D_SAE) * 0.8)
        return ae

    def batch_topk(threshold: float):
        def make():
            ae = BatchTopKSAE(D_IN, D_SAE, K)
            randomize(ae, 3)
            ae.threshold.fill_(threshold)
            return ae
        return make

    def plain(cls, *args):
        def make():
            ae = cls(D_IN, D_SAE, *args)
            randomize(ae, 4)
            return ae
        return make

    return [
        ("AutoEncoder", plain(AutoEncoder), AutoEncoder, "standard"),
        ("JumpReluAutoEncoder", jumprelu, JumpReluAutoEncoder, "jumprelu"),
        ("AutoEncoderTopK", plain(AutoEncoderTopK, K), AutoEncoderTopK, "topk"),
        ("BatchTopKSAE", batch_topk(0.7), BatchTopKSAE, "jumprelu"),
        ("BatchTopKSAE", batch_topk(-1.0), BatchTopKSAE, "standard"),
    ]


@pytest.mark.parametrize("case", range(5))
def test_dictionary_learning_features_equal_the_library(tmp_path, case):
    dict_class, make, cls, architecture = dictionary_cases()[case]
    folder = save_dictionary(tmp_path, make(), dict_class, k=K)
    theirs = cls.from_pretrained(str(folder / "ae.pt"))  # the library's own loader
    sae = load_sae(folder)
    assert sae.architecture == architecture and sae.d_sae == D_SAE
    assert sae.cfg["metadata"]["dict_class"] == dict_class
    assert sae.hook_name == "resid_post_layer_3"
    x = inputs(case)
    with torch.no_grad():
        assert_same_features(sae.encode(x), theirs.encode(x))
        assert_same_features(sae.decode(sae.encode(x)).reshape(-1, D_IN).repeat(1, 4),
                             theirs.decode(theirs.encode(x)).reshape(-1, D_IN).repeat(1, 4))


def test_dictionary_learning_unsupported_class_and_missing_config(tmp_path):
    from dictionary_learning import GatedAutoEncoder
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    folder = save_dictionary(tmp_path, GatedAutoEncoder(D_IN, D_SAE), "GatedAutoEncoder")
    with pytest.raises(ValueError, match="dict_class 'GatedAutoEncoder' is not supported"):
        load_sae(folder)
    folder = save_dictionary(tmp_path, AutoEncoderTopK(D_IN, D_SAE, K), "AutoEncoderTopK")
    (folder / "config.json").unlink()
    with pytest.raises(ValueError, match="TopK and BatchTopK save the same names"):
        load_sae(folder)


def test_a_pickled_object_is_never_unpickled(tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    torch.save({"encoder.weight": torch.zeros(2, 2), "payload": Path("x")}, folder / "ae.pt")
    with pytest.raises(ValueError, match="weights_only"):
        load_sae(folder)


def test_an_unknown_folder_lists_what_it_holds(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no SAE found.*\['model\.bin'\]"):
        load_sae(tmp_path)


def test_a_monitor_records_a_loaded_sparsify_sae_like_its_library(tmp_path):
    folder, coder = sparsify_coder(tmp_path)
    sae = load_sae(folder)
    x = inputs(5)
    monitor = FeatureMonitor.for_sae(sae, compile=False)
    monitor.encode_and_record(sae, x, "r")
    reference = FeatureMonitor(D_SAE, compile=False)
    reference.on_activation(sparsify_features(coder, x).reshape(3, 7, D_SAE), request_id="r")
    ours, theirs = monitor.get_statistics(), reference.get_statistics()
    assert [f.active_count for f in ours.features] == [f.active_count for f in theirs.features]
    for a, b in zip(ours.features, theirs.features, strict=True):
        assert a.mean == pytest.approx(b.mean, rel=1e-5, abs=1e-6)
