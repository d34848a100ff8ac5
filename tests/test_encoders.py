"""Encoder families: shapes, missing rows, clear errors on bad input, local weights."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from modfuse.data.batch import PaddedTensor, encode_present
from modfuse.data.collate import collate_samples
from modfuse.encoders import available, build, wrap
from modfuse.encoders.weights import read_state_dict, save_state_dict
from modfuse.errors import ModfuseError, ReadError

FAMILIES = ["tabular", "omics", "ecg", "xray", "spectral", "spectral_tokens", "timeseries", "graph"]


def _graph(i: int, in_dim: int = 5, edge_dim: int | None = 3) -> Any:
    from torch_geometric.data import Data

    n = 2 + i % 3
    edges = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n])
    attr = torch.randn(n, edge_dim) if edge_dim else None
    return Data(x=torch.randn(n, in_dim), edge_index=edges, edge_attr=attr)


# name -> (build kwargs, sample i -> one modality value); sizes tiny so CPU tests stay fast
CASES: dict[str, tuple[str, dict[str, Any], Callable[[int], Any]]] = {
    "tabular": (
        "tabular",
        {"num_features": 6, "categorical": {5: 3}, "hidden": (16,), "out_dim": 8},
        lambda i: np.array([0.1 * i, np.nan, 1.0, 2.0, -1.0, i % 3], dtype=np.float32),
    ),
    "omics": ("omics", {"num_features": 300, "hidden": (32, 16), "out_dim": 8}, lambda i: torch.randn(300)),
    "ecg": (
        "ecg",
        {"leads": 3, "widths": (8, 16), "blocks": 1, "out_dim": 12},
        lambda i: torch.randn(3, 100 + 37 * i),
    ),  # variable lengths -> PaddedTensor
    "spectral": ("spectral", {"bands": 5, "out_dim": 16}, lambda i: torch.randn(5, 32, 32)),
    "xray": ("xray", {"arch": "small", "out_dim": 8}, lambda i: torch.randn(1, 16, 16)),
    "xray_densenet": ("xray", {"out_dim": 8}, lambda i: torch.randn(1, 32, 32)),
    "spectral_tokens": (
        "spectral_tokens",
        {"bands": 6, "band_group": 2, "image_size": 16, "patch_size": 8, "out_dim": 16, "depth": 1, "heads": 2},
        lambda i: torch.randn(6, 16, 16),
    ),
    "timeseries": (
        "timeseries",
        {"channels": 2, "hidden": 16, "heads": 2, "out_dim": 8},
        lambda i: {"x": torch.randn(7, 2), "valid": torch.arange(7) % (i + 2) != 0},
    ),
    "timeseries_gru": (
        "timeseries",
        {"channels": 2, "kind": "gru", "hidden": 16, "out_dim": 8},
        lambda i: torch.where(torch.rand(5 + i, 2) < 0.3, float("nan"), torch.randn(5 + i, 2)),
    ),
    "gin": ("graph", {"in_dim": 5, "hidden": 16, "layers": 2, "out_dim": 8}, lambda i: _graph(i, edge_dim=None)),
    "gine": ("graph", {"in_dim": 5, "edge_dim": 3, "hidden": 16, "layers": 2, "out_dim": 8}, _graph),
}


def _batch(make: Callable[[int], Any], present: list[bool]) -> Any:
    samples = [{"id": f"s{i}", "inputs": {"m": _seeded(make, i) if p else None}} for i, p in enumerate(present)]
    return collate_samples(samples, modalities=["m"])


def _seeded(make: Callable[[int], Any], i: int) -> Any:
    """Sample i is the same whichever batch it is collated into."""
    with torch.random.fork_rng():
        torch.manual_seed(i)
        return make(i)


def _rows(x: Any) -> int:
    """Rows of a collated modality input (Tensor, PaddedTensor, dict of those, PyG Batch)."""
    if hasattr(x, "num_graphs"):
        return int(x.num_graphs)
    if isinstance(x, dict):
        return _rows(next(iter(x.values())))
    return len(x)


def _declared(enc: nn.Module, n: int) -> tuple[int, ...]:
    return (n, enc.out_dim) if enc.out_tokens is None else (n, enc.out_tokens, enc.out_dim)


def test_every_registered_encoder_meets_the_contract_tests() -> None:
    """A newly registered encoder needs a case in CASES, so the contract tests below run over it."""
    assert set(FAMILIES) <= set(available())
    covered = {name for name, _, _ in CASES.values()}
    assert set(available()) <= covered, f"add a CASES entry for {sorted(set(available()) - covered)}"


def test_importing_encoders_loads_no_heavy_library() -> None:
    heavy = ["monai", "torchgeo", "timm", "rasterio", "torch_geometric", "pydicom", "captum", "wfdb", "rdkit"]
    code = f"import sys, modfuse, modfuse.encoders; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("case", list(CASES))
def test_family_encodes_present_rows_only_with_declared_shape(case: str) -> None:
    name, kwargs, make = CASES[case]
    enc = build(name, **kwargs)
    present = [True, False, True, True, False]
    batch = _batch(make, present)
    calls: list[int] = []
    enc.register_forward_pre_hook(lambda mod, args: calls.append(_rows(args[0])))
    feats, index = encode_present(enc, batch, "m")
    assert tuple(feats.shape) == _declared(enc, sum(present))
    assert index.tolist() == [0, 2, 3]
    assert calls == [3]  # the encoder ran once, on the 3 present rows only
    assert torch.isfinite(feats).all()
    feats.pow(2).mean().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("case", ["ecg", "timeseries", "timeseries_gru", "gine", "spectral"])
def test_a_rows_features_do_not_depend_on_its_batch(case: str) -> None:
    """Rows are independent: encoding a row alone (no padding, no batch-mates) gives the same output."""
    name, kwargs, make = CASES[case]
    enc = build(name, **kwargs).eval()
    batch = _batch(make, [True] * 4)
    alone = _batch(make, [False, False, True])  # sample 2 alone: no padding to a longer batch-mate
    with torch.no_grad():
        together, _ = encode_present(enc, batch, "m")
        single, _ = encode_present(enc, alone, "m")
    torch.testing.assert_close(together[2:3], single, atol=1e-5, rtol=1e-4)


def test_early_fusion_over_several_families_with_missing_rows() -> None:
    from modfuse.fusion import EarlyFusion

    names = ["ecg", "omics", "gine"]
    encoders = {m: build(CASES[m][0], **CASES[m][1]) for m in names}
    pattern = {"ecg": [1, 0, 1, 0], "omics": [0, 1, 1, 0], "gine": [1, 1, 0, 0]}  # sample 3 has nothing
    samples = [
        {"id": i, "inputs": {m: CASES[m][2](i) if pattern[m][i] else None for m in names}, "target": float(i % 2)}
        for i in range(4)
    ]
    batch = collate_samples(samples, modalities=names)
    model = EarlyFusion(encoders, tasks="binary", hidden=16)
    logits = model(batch).prediction
    assert logits.shape == (4, 1)
    nn.functional.binary_cross_entropy_with_logits(logits[:, 0], batch.target.float()).backward()
    assert encoders["ecg"].stem.weight.grad is not None


def _raises(fn: Callable[[], Any], *needles: str) -> str:
    with pytest.raises(ModfuseError) as info:
        fn()
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, msg
    return msg


@pytest.mark.parametrize(
    ("case", "bad", "needles"),
    [
        ("ecg", torch.randn(2, 4, 50), ("leads", "expected 3", "found 4")),
        ("omics", torch.randn(2, 299), ("omics features", "expected 300", "found 299")),
        ("spectral", torch.randn(2, 4, 32, 32), ("bands", "expected 5", "found 4")),
        ("spectral_tokens", torch.randn(2, 6, 32, 32), ("height", "expected 16", "found 32")),
        ("timeseries", torch.randn(2, 7, 3), ("channels", "expected 2", "found 3")),
        ("ecg", torch.randn(2, 3), ("(n, leads, samples)", "found shape (2, 3)")),
    ],
)
def test_wrong_shape_names_expected_and_found(case: str, bad: torch.Tensor, needles: tuple[str, ...]) -> None:
    name, kwargs, _ = CASES[case]
    _raises(lambda: build(name, **kwargs)(bad), *needles)


def test_non_finite_values_raise_and_name_the_modality_and_samples() -> None:
    name, kwargs, make = CASES["ecg"]
    enc = build(name, **kwargs)
    samples = [{"id": f"p{i}", "inputs": {"ecg": make(i)}} for i in range(3)]
    samples[1]["inputs"]["ecg"][0, 10] = float("nan")
    batch = collate_samples(samples)
    msg = _raises(lambda: encode_present(enc, batch, "ecg"), "'ecg'", "finite", "NaN/inf", "row 1")
    assert "p1" in msg
    series = torch.randn(2, 5, 2)
    series[0, 1, 0] = float("inf")
    _raises(lambda: build("timeseries", channels=2, hidden=8, heads=2)(series), "inf", "row 0")


def test_graph_feature_widths_are_checked() -> None:
    from torch_geometric.data import Batch, Data

    graphs = Batch.from_data_list([_graph(i, in_dim=7, edge_dim=3) for i in range(2)])
    _raises(lambda: build("graph", in_dim=5, edge_dim=3)(graphs), "node feature width", "expected 5", "found 7")
    _raises(lambda: build("graph", in_dim=7, edge_dim=4)(graphs), "edge feature width", "expected 4", "found 3")
    no_edges = Batch.from_data_list([_graph(i, in_dim=7, edge_dim=None) for i in range(2)])
    _raises(lambda: build("graph", in_dim=7, edge_dim=3)(no_edges), "edge_attr", "found none")
    gin = build("graph", in_dim=7, hidden=8, layers=1, out_dim=4)
    _raises(lambda: gin(Data(x=torch.randn(3, 7))), "edge_index", "(2, num_edges)", "found none")
    assert gin(Data(x=torch.randn(3, 7), edge_index=torch.tensor([[0], [1]]))).shape == (1, 4)  # one graph


def test_graph_encoder_on_real_esol_molecules(shared_data: Path) -> None:
    import pandas as pd

    from modfuse.data.readers.molecules import ATOM_FEATURES, BOND_FEATURES, smiles_to_graph

    smiles = pd.read_csv(shared_data / "esol" / "delaney-processed.csv")["smiles"].tolist()[:6]
    samples = [{"id": s, "inputs": {"mol": smiles_to_graph(s) if i % 3 else None}} for i, s in enumerate(smiles)]
    batch = collate_samples(samples)
    enc = build("graph", in_dim=ATOM_FEATURES, edge_dim=BOND_FEATURES, hidden=16, layers=2, out_dim=8)
    feats, index = encode_present(enc, batch, "mol")
    assert feats.shape == (4, 8) and index.tolist() == [1, 2, 4, 5]


def test_ecg_on_real_wfdb_windows_of_different_lengths(shared_data: Path) -> None:
    wfdb = pytest.importorskip("wfdb")
    record = wfdb.rdrecord(str(shared_data / "ecg-wfdb" / "100"), sampto=2000)
    signal = torch.from_numpy(record.p_signal.T.astype(np.float32))  # (2 leads, 2000) at 360 Hz
    windows = [signal[:, :720], None, signal[:, 720:1800], signal[:, 1800:]]
    batch = collate_samples([{"id": i, "inputs": {"ecg": w}} for i, w in enumerate(windows)])
    assert isinstance(batch.inputs["ecg"], PaddedTensor)
    enc = build("ecg", leads=2, widths=(16, 32), blocks=1).eval()
    with torch.no_grad():
        feats, index = encode_present(enc, batch, "ecg")
        alone = enc(signal[:, 1800:][None])
    assert feats.shape == (3, enc.out_dim) and index.tolist() == [0, 2, 3]
    torch.testing.assert_close(feats[2:], alone, atol=1e-5, rtol=1e-4)  # padding did not change it
    _raises(lambda: build("ecg", leads=12)(signal[None]), "expected 12", "found 2")


def test_timeseries_on_real_cloudy_ndvi_pixels(shared_data: Path) -> None:
    root = shared_data / "eopatch-slovenia"
    ndvi = np.load(root / "data" / "NDVI.npy")[:, :3, :3, :]  # (68 dates, 3, 3, 1)
    valid = np.load(root / "mask" / "IS_VALID.npy")[:, :3, :3, 0] & (
        np.load(root / "mask" / "CLM.npy")[:, :3, :3, 0] == 0
    )
    x = torch.from_numpy(ndvi).permute(1, 2, 0, 3).reshape(9, 68, 1)
    ok = torch.from_numpy(valid).permute(1, 2, 0).reshape(9, 68)
    assert 0 < int(ok.sum()) < ok.numel()  # the real series has cloud gaps
    ok[4] = False  # a pixel clouded on every date
    days = torch.tensor(_days(root), dtype=torch.float32).expand(9, 68)
    for kind in ("transformer", "gru"):
        enc = build("timeseries", channels=1, kind=kind, hidden=16, heads=2, out_dim=8).eval()
        with torch.no_grad():
            out = enc({"x": x, "valid": ok, "t": days})
            # NaN marking of the same gaps is the same input
            nan_form = enc({"x": x.masked_fill(~ok[..., None], float("nan")), "valid": torch.ones_like(ok), "t": days})
        torch.testing.assert_close(out, nan_form)
        torch.testing.assert_close(out[4], enc.no_observation.detach())  # no valid date -> learned embedding
        assert not torch.allclose(out[3], out[5])


def _days(root: Path) -> list[float]:
    from datetime import datetime

    stamps = [datetime.fromisoformat(s) for s in json.loads((root / "timestamps.json").read_text())]
    return [(s - stamps[0]).total_seconds() / 86400 for s in stamps]


def test_omics_snn_keeps_activations_normalised() -> None:
    enc = build("omics", num_features=2000, hidden=(256, 256, 256), out_dim=8).eval()
    seen: list[torch.Tensor] = []
    selus = [m for m in enc.net if isinstance(m, nn.SELU)]
    selus[-1].register_forward_hook(lambda mod, args, out: seen.append(out))
    with torch.no_grad():
        enc(torch.randn(512, 2000))
    # self-normalisation (LeCun init + SELU): the third hidden layer is still ~N(0, 1)
    assert abs(float(seen[0].mean())) < 0.15 and abs(float(seen[0].std()) - 1.0) < 0.15
    _raises(lambda: build("omics", num_features=3, mean=[0.0, 1.0]), "length of mean", "expected 3", "found 2")


def test_tabular_uses_partially_observed_rows() -> None:
    enc = build("tabular", num_features=3, hidden=(8,), out_dim=4).eval()
    x = torch.tensor([[1.0, float("nan"), 2.0], [1.0, 0.0, 2.0]])
    out = enc(x)
    assert torch.isfinite(out).all() and not torch.allclose(out[0], out[1])  # NaN is not zero
    _raises(lambda: enc(torch.zeros(2, 4)), "table columns", "expected 3", "found 4")


def test_wrap_infers_out_dim_and_tokens() -> None:
    enc = wrap(nn.Sequential(nn.Linear(10, 32), nn.ReLU()), example=torch.zeros(2, 10))
    assert (enc.out_dim, enc.out_tokens) == (32, None)
    tokens = wrap(nn.Linear(4, 6), example=torch.zeros(2, 5, 4))
    assert (tokens.out_dim, tokens.out_tokens) == (6, 5)
    _raises(lambda: wrap(nn.Linear(4, 6)), "out_dim")


# ---------------------------------------------------------------- weights


def test_spectral_loads_local_weights_pt_and_safetensors(tmp_path: Path) -> None:
    import timm

    reference = timm.create_model("resnet18", in_chans=7, num_classes=10).eval()  # a BatchNorm-trained net
    with torch.no_grad():
        for m in reference.modules():  # non-trivial running statistics
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 7, 32, 32)
    with torch.no_grad():
        want = reference.forward_head(reference.forward_features(x), pre_logits=True)
    for suffix in (".pt", ".safetensors"):
        path = save_state_dict(reference, tmp_path / f"r18{suffix}")
        enc = build("spectral", bands=7, weights_path=str(path))
        assert enc.norm == "frozen_batch" and enc.out_dim == 512
        enc.train()  # frozen statistics: training mode gives the pretrained features too
        torch.testing.assert_close(enc(x), want, atol=1e-4, rtol=1e-4)
    msg = _raises(
        lambda: build("spectral", bands=4, weights_path=str(tmp_path / "r18.pt")), "7 bands", "expects 4 bands"
    )
    assert "r18.pt" in msg


def test_spectral_weights_enum_band_mismatch_raises_before_download(tmp_path: Path) -> None:
    from torchvision.models._api import Weights, WeightsEnum

    fetched: list[str] = []
    path = save_state_dict(build("spectral", bands=3, norm="frozen_batch").backbone, tmp_path / "w.pt")

    class FakeWeights(WeightsEnum):
        THREE = Weights(
            url="https://example.invalid/w.pt",
            transforms=None,
            meta={"in_chans": 3, "model": "resnet18", "bands": ["R", "G", "B"]},
        )

        def get_state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
            fetched.append(self.name)  # stands in for the download
            return read_state_dict(path)

    _raises(lambda: build("spectral", bands=13, weights=FakeWeights.THREE), "3 bands (R, G, B)", "expects 13 bands")
    _raises(
        lambda: build("spectral", bands=3, weights=FakeWeights.THREE, backbone="resnet34"), "'resnet18'", "'resnet34'"
    )
    assert fetched == []  # both checks ran before any download
    enc = build("spectral", bands=3, weights=FakeWeights.THREE, out_dim=32)
    assert fetched == ["THREE"] and enc(torch.randn(1, 3, 32, 32)).shape == (1, 32)


def test_xray_densenet_local_weights_forward_backward(tmp_path: Path) -> None:
    from monai.networks.nets import DenseNet121

    trained = DenseNet121(spatial_dims=2, in_channels=1, out_channels=3).eval()  # BatchNorm, another head size
    path = save_state_dict(trained, tmp_path / "dn121.safetensors")
    _raises(lambda: build("xray", in_channels=3, weights_path=str(path)), "1 image channels", "expects 3")
    enc = build("xray", weights_path=str(path), out_dim=16)
    assert enc.norm == "frozen_batch"
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc.net.features(x), trained.features(x), atol=1e-4, rtol=1e-4)
    batch = _batch(lambda i: x[0], [False, True])  # one present row: frozen statistics need no batch-mates
    feats, _ = encode_present(enc, batch, "m")
    assert feats.shape == (1, 16) == _declared(enc, 1)
    feats.sum().backward()
    assert enc.net.class_layers.out.weight.grad is not None
    _raises(lambda: enc(torch.randn(1, 1, 16, 16)), "at least 32x32", "(16, 16)")


def test_unsafe_or_broken_weight_files_are_refused(tmp_path: Path) -> None:
    pickled = tmp_path / "evil.pt"
    torch.save({"model": _NotATensor()}, pickled)  # needs full unpickling: refused
    with pytest.raises(ReadError) as info:
        read_state_dict(pickled)
    assert "evil.pt" in str(info.value)
    garbage = tmp_path / "junk.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ReadError, match=r"junk\.safetensors"):
        read_state_dict(garbage)
    with pytest.raises(ReadError, match="not found"):
        read_state_dict(tmp_path / "absent.pt")
    wrong = save_state_dict({"conv1.weight": torch.zeros(64, 5, 7, 7)}, tmp_path / "partial.pt")
    _raises(lambda: build("spectral", bands=5, weights_path=str(wrong)), "missing from the file")


class _NotATensor:
    """A pickled Python object: what weights_only=True must refuse to load."""


def test_build_config_is_json_and_rebuilds_the_same_architecture() -> None:
    from modfuse.encoders import config_of

    enc = build("timeseries", channels=3, kind="gru", hidden=8, out_dim=4)
    config = json.loads(json.dumps(config_of(enc)))
    again = build(config.pop("name"), **config)
    again.load_state_dict(enc.state_dict())  # same parameter names and shapes
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(again.eval()(x), enc.eval()(x))


# ---------------------------------------------------------------- band names and foreign weights

S2_WEIGHT_BANDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8a", "B9", "B10", "B11", "B12"]


def _s2_resnet(tmp_path: Path) -> tuple[nn.Module, Path]:
    """A 13-band timm ResNet-18 saved as a local state dict (stands in for SSL4EO-S12 weights)."""
    import timm

    net = timm.create_model("resnet18", in_chans=13, num_classes=0).eval()
    return net, save_state_dict(net, tmp_path / "s2_r18.pt")


def test_band_names_are_normalised_and_a_reversed_order_is_refused(shared_data: Path, tmp_path: Path) -> None:
    from modfuse.data.readers.raster import SENTINEL2_BANDS, RasterChipSource
    from modfuse.encoders.weights import band_key

    assert [band_key(b) for b in ("B1", "b01", "B8a", "SR_B1", "VV")] == ["B01", "B01", "B8A", "SR_B01", "VV"]
    _, path = _s2_resnet(tmp_path)
    scene = shared_data / "sentinel2-l1c"
    right = RasterChipSource(scene, size=64, bands=tuple(SENTINEL2_BANDS))
    enc = build("spectral", bands=right.bands, weights_path=str(path), weight_bands=S2_WEIGHT_BANDS)  # B01 = B1
    assert enc(right.load("chip0")[None]).shape == (1, 512)
    reversed_chips = RasterChipSource(scene, size=64, bands=tuple(reversed(SENTINEL2_BANDS)))
    msg = _raises(
        lambda: build("spectral", bands=reversed_chips.bands, weights_path=str(path), weight_bands=S2_WEIGHT_BANDS),
        "another order",
        "adapt_bands=True",
    )
    assert "'B12', 'B11', 'B10'" in msg and "'B1', 'B2', 'B3'" in msg  # both lists
    _raises(
        lambda: build("spectral", bands=["B02", "VV"], weights_path=str(path), weight_bands=S2_WEIGHT_BANDS),
        "not trained on bands ['VV']",
    )


def test_a_12_band_chip_reuses_13_band_weights_by_name(shared_data: Path, tmp_path: Path) -> None:
    from modfuse.data.readers.raster import SENTINEL2_BANDS, RasterChipSource

    net, path = _s2_resnet(tmp_path)
    no_b10 = [b for b in SENTINEL2_BANDS if b != "B10"]  # BigEarthNet's 12 bands
    chips = RasterChipSource(shared_data / "sentinel2-l1c", size=64, bands=no_b10)
    _raises(
        lambda: build("spectral", bands=chips.bands, weights_path=str(path), weight_bands=S2_WEIGHT_BANDS),
        "a different set of bands",
    )
    enc = build("spectral", bands=chips.bands, weights_path=str(path), weight_bands=S2_WEIGHT_BANDS, adapt_bands=True)
    kept = enc.backbone.conv1.weight
    original = net.conv1.weight
    assert kept.shape == (64, 12, 7, 7)
    torch.testing.assert_close(kept[:, :10], original[:, :10])  # B01..B09 as trained
    torch.testing.assert_close(kept[:, 10:], original[:, 11:])  # B11, B12: B10's filters dropped
    # another order by name: the filters follow the bands
    swapped = build("spectral", bands=["B04", "B03", "B02"], weights_path=str(path), weight_bands=S2_WEIGHT_BANDS,
                    adapt_bands=True)  # fmt: skip
    torch.testing.assert_close(swapped.backbone.conv1.weight, original[:, [3, 2, 1]])
    # the rest of the network is the pretrained one: same features as the 13-band net with B10 = 0
    x = chips.load("chip0")[None] / 10000
    full = torch.cat([x[:, :10], torch.zeros_like(x[:, :1]), x[:, 10:]], 1)
    with torch.no_grad():
        torch.testing.assert_close(enc.eval()(x), net(full), atol=1e-4, rtol=1e-4)


def _fake_enum(path: Path, fetched: list[str], fail: bool = False) -> Any:
    """A torchgeo-style weights enum (13 Sentinel-2 bands, /10000) whose 'download' is a local file."""
    import torchvision.transforms.v2 as T
    from torchvision.models._api import Weights, WeightsEnum

    class S2Weights(WeightsEnum):
        ALL = Weights(
            url="https://example.invalid/s2.pth",
            transforms=nn.Sequential(T.Resize(256), T.CenterCrop(224), T.Normalize(mean=[0], std=[10000])),
            meta={"in_chans": 13, "model": "resnet18", "bands": S2_WEIGHT_BANDS},
        )

        def get_state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
            fetched.append(self.name)
            if fail:
                import urllib.error

                raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
            return read_state_dict(path)

    return S2Weights.ALL


def test_enum_weights_apply_their_normalisation_and_adapt_bands(tmp_path: Path) -> None:
    net, path = _s2_resnet(tmp_path)
    fetched: list[str] = []
    weights = _fake_enum(path, fetched)
    _raises(lambda: build("spectral", bands=list(reversed(S2_WEIGHT_BANDS)), weights=weights), "another order")
    assert fetched == []  # the band order is checked before any download
    enc = build("spectral", bands=["B02", "B03", "B04", "B08"], weights=weights, adapt_bands=True).eval()
    assert fetched == ["ALL"] and enc.input_std.flatten().tolist() == [10000.0]
    raw = torch.rand(1, 4, 32, 32) * 3000  # raw reflectance x 10000, as the reader gives it
    full = torch.zeros(1, 13, 32, 32)
    full[:, [1, 2, 3, 7]] = raw / 10000
    with torch.no_grad():
        torch.testing.assert_close(enc(raw), net(full), atol=1e-4, rtol=1e-4)
    plain = build("spectral", bands=13, weights=weights, normalize=False)
    assert plain.input_mean is None


def test_enum_without_network_says_how_to_use_a_local_file(tmp_path: Path) -> None:
    net, path = _s2_resnet(tmp_path)
    fetched: list[str] = []
    offline = _fake_enum(path, fetched, fail=True)
    msg = _raises(lambda: build("spectral", bands=13, weights=offline), "cannot download", "weights_path=")
    assert "example.invalid/s2.pth" in msg and "URLError" in msg
    fetched.clear()
    enc = build("spectral", bands=S2_WEIGHT_BANDS, weights=offline, weights_path=str(path)).eval()  # no download
    assert fetched == [] and enc.input_std is not None
    x = torch.rand(1, 13, 32, 32) * 10000
    with torch.no_grad():
        torch.testing.assert_close(enc(x), net(x / 10000), atol=1e-4, rtol=1e-4)


def test_real_torchgeo_enum_and_task_checkpoint_load_offline(tmp_path: Path) -> None:
    pytest.importorskip("torchgeo")
    from torchgeo.models import ResNet18_Weights
    from torchgeo.trainers import ClassificationTask

    task = ClassificationTask(model="resnet18", in_channels=13, num_classes=10, weights=None)
    ckpt = tmp_path / "task.ckpt"  # what Lightning saves: state_dict keys carry the task's "model." prefix
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams), "epoch": 3}, ckpt)
    enc = build(
        "spectral", bands=13, weights="ResNet18_Weights.SENTINEL2_ALL_MOCO", weights_path=str(ckpt)
    ).eval()  # the real enum describes the local file: its bands and /10000 apply, nothing downloads
    assert enc.input_std.flatten().tolist() == [10000.0]
    torch.testing.assert_close(enc.backbone.conv1.weight, task.model.conv1.weight)
    x = torch.rand(1, 13, 32, 32) * 10000
    with torch.no_grad():
        want = task.model.eval().forward_head(task.model.forward_features(x / 10000), pre_logits=True)
        torch.testing.assert_close(enc(x), want, atol=1e-4, rtol=1e-4)
    assert ResNet18_Weights.SENTINEL2_ALL_MOCO.meta["bands"][8] == "B8a"  # matched to the reader's B8A


def test_foreign_state_dicts_with_ignore_keys_or_strict_false(tmp_path: Path) -> None:
    net, _ = _s2_resnet(tmp_path)
    state = {**net.state_dict(), "op_threshs": torch.rand(18)}
    path = save_state_dict(state, tmp_path / "extra.pt")
    _raises(lambda: build("spectral", bands=13, weights_path=str(path)), "not in the model: ['op_threshs']")
    enc = build("spectral", bands=13, weights_path=str(path), ignore_keys=["op_threshs"])
    torch.testing.assert_close(enc.backbone.conv1.weight, net.conv1.weight)
    with pytest.warns(UserWarning, match="strict=False"):
        build("spectral", bands=13, weights_path=str(path), strict=False)


def test_xrv_state_dict_with_op_threshs_loads_and_the_preset_maps_0_1_to_xrv_range(tmp_path: Path) -> None:
    xrv = pytest.importorskip("torchxrayvision")
    model = xrv.models.DenseNet(weights=None).eval()  # torchxrayvision's architecture, built locally
    with torch.no_grad():
        for m in model.modules():  # non-trivial running statistics, as trained weights have
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    state = {**model.state_dict(), "op_threshs": torch.rand(18)}  # what xrv weight files carry
    path = save_state_dict(state, tmp_path / "xrv-densenet121.pt")
    _raises(lambda: build("xray", weights_path=str(path)), "not in the model: ['op_threshs']")
    plain = build("xray", weights_path=str(path), ignore_keys=["op_threshs"]).eval()
    image = torch.rand(1, 1, 64, 64)  # [0, 1], what DicomSource returns
    xrv_input = torch.from_numpy(xrv.datasets.normalize(image.numpy() * 255, maxval=255))  # [-1024, 1024]
    with torch.no_grad():
        want = model.features(xrv_input)
        torch.testing.assert_close(plain.net.features(xrv_input), want, atol=1e-3, rtol=1e-4)
        preset = build("xray", weights_path=str(path), preset="xrv").eval()  # op_threshs ignored by the preset
        torch.testing.assert_close(preset.net.features(image * preset.scale + preset.shift), want, atol=1e-3, rtol=1e-4)
        assert (preset.scale, preset.shift) == (2048.0, -1024.0)
        # the preset's forward maps the range itself: [0, 1] in, the plain encoder's output for
        # xrv's input (the new head, not in the weights, made equal first)
        assert preset(image).shape == (1, 512)
        preset.net.class_layers.load_state_dict(plain.net.class_layers.state_dict())
        torch.testing.assert_close(preset(image), plain(xrv_input), atol=1e-3, rtol=1e-4)
    _raises(lambda: build("xray", preset="chexnet"), "expected one of ['xrv']")
