"""One save/load story: every strategy and every kind of encoder (registry-built, a recipe's
``class_path``, ``wrap(...)`` of MONAI and timm networks, a user package's entry point) is
described as JSON, saved as safetensors, and rebuilt exactly, also in a new process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import modfuse
from modfuse import LegoBlock, MultiModalDataset, fusion, merge
from modfuse.core.config import ConfigError, describe, instantiate
from modfuse.core.tasks import TaskSpec
from modfuse.data.batch import ModalityBatch
from modfuse.encoders import build, wrap
from modfuse.errors import ModfuseError
from modfuse.lego.io import load_any
from modfuse.lego.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
D = 5
LATENT = {"latent_shape": (8, 16), "heads": 2}
# the few strategies that need an argument beyond encoders and tasks; every other registered
# strategy is built with its defaults, so a new one is tested without touching this file
EXTRA = {"unimodal": {"modality": "b"}, "lego-merge": LATENT, "lego-fuse": LATENT}


def tabular_batch(n: int = 10, seed: int = 0) -> ModalityBatch:
    rng = np.random.default_rng(seed)
    X = {m: rng.normal(size=(n, D)).astype("float32") for m in "ab"}
    X["a"][[1, 3]] = np.nan  # row 3 has no modality at all: the prior prediction
    X["b"][[3, 5]] = np.nan
    ds = MultiModalDataset.from_arrays(X, rng.integers(0, 3, n))
    return ds.collate_fn([ds[i] for i in range(n)])


def perturb(model: nn.Module, seed: int, encoders: bool = True) -> nn.Module:
    """Distinct weights (as after training), so a rebuilt fresh model would not match by chance;
    ``encoders=False`` leaves deep pretrained-style encoders alone (noise overflows a DenseNet)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if encoders or not name.startswith("encoder."):
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new Python process (this checkout first on the path)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(ROOT)) if p)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full_env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


# ---------------------------------------------------------------- every strategy


@pytest.mark.parametrize("strategy", fusion.available())
def test_every_strategy_round_trips_exactly(strategy: str, tmp_path: Path) -> None:
    encoders = {
        "a": build("tabular", num_features=D, hidden=[8], out_dim=8, dropout=0.0),
        "b": wrap(nn.Sequential(nn.Linear(D, 8), nn.Tanh()), out_dim=8),
    }
    model = fusion.build(strategy, encoders=encoders, tasks=TaskSpec("multiclass", 3), **EXTRA.get(strategy, {}))
    perturb(model, seed=1)
    path = modfuse.save(model, tmp_path / "model.safetensors")
    loaded = modfuse.load(path)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    batch = tabular_batch()
    with torch.no_grad():
        want, got = model(batch).prediction, loaded(batch).prediction
    assert want.shape == (10, 3) and torch.equal(want, got)


def test_strategies_are_listed_without_being_imported() -> None:
    code = """
        import sys
        from modfuse import fusion
        names = fusion.available()
        print(names, "modfuse.sequential.model" in sys.modules, "modfuse.lego.merge" in sys.modules)
    """
    out = run_python(code).stdout.strip()
    assert out == ("['attention', 'early', 'late', 'lego-fuse', 'lego-merge', 'sequential', 'unimodal'] False False")


# ---------------------------------------------------------------- describe / instantiate


class Activation(nn.Module):
    """A module taking a function: not describable as JSON."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def test_values_round_trip_with_their_types() -> None:
    conv = nn.Conv2d(1, 4, kernel_size=(3, 5), padding=(1, 2), dtype=torch.float64)
    config = json.loads(json.dumps(describe({"conv": conv, "keys": {4: 2}, "act": nn.GELU, "t": (1, [2])})))
    rebuilt = instantiate(config)
    assert rebuilt["keys"] == {4: 2} and rebuilt["act"] is nn.GELU and rebuilt["t"] == (1, [2])
    assert rebuilt["conv"].kernel_size == (3, 5) and rebuilt["conv"].weight.dtype == torch.float64


def test_a_config_written_before_task_specs_moved_to_core_still_builds() -> None:
    """Saved models name ``modfuse.training.spec.TaskSpec`` from before the core layer existed."""
    old = {"class_path": "modfuse.training.spec.TaskSpec", "init_args": {"kind": "multiclass", "num_outputs": 3}}
    assert instantiate(old) == TaskSpec("multiclass", 3)


def test_an_undescribable_encoder_fails_at_save_time_naming_it(tmp_path: Path) -> None:
    enc = wrap(nn.Sequential(nn.Linear(D, 8), Activation(torch.tanh)), out_dim=8)
    model = fusion.build("early", encoders={"a": enc}, tasks="binary")
    with pytest.raises(
        ConfigError,
        match=r"model\.encoders\.a\.module\[1\] \(Activation\): it was constructed with a function argument",
    ):
        modfuse.save(model, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
    # a Lego block names the modality whose encoder cannot be saved
    with pytest.raises(ModfuseError, match=r"cannot describe the encoder as JSON to save this block") as info:
        modfuse.save(LegoBlock(enc, "a", **LATENT), tmp_path / "b.safetensors")
    assert info.value.modality == "a" and not (tmp_path / "b.safetensors").exists()


def test_a_saved_config_cannot_call_a_function(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    config = {"class_path": "os.system", "init_args": {"command": f"touch {marker}"}}
    path = tmp_path / "evil.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"modfuse_config": json.dumps(config)})
    with pytest.raises(ConfigError, match=r"refusing to build 'os\.system'"):
        modfuse.load(path)
    nested = {"class_path": "torch.nn.Sequential", "__args__": [{"__class__": "subprocess.Popen"}]}
    with pytest.raises(ConfigError, match=r"refusing to build 'subprocess\.Popen'"):
        instantiate(nested)
    assert not marker.exists()
    # names read from a file never reach a function at a dotted path
    with pytest.raises(ModfuseError, match=r"unknown merge method 'os\.system'"):
        METHODS.get("os.system")


def test_registries_resolve_dotted_paths_to_their_base_class_only() -> None:
    from modfuse.encoders import ENCODERS

    assert ENCODERS.get("modfuse.encoders.wrap.WrappedEncoder").__name__ == "WrappedEncoder"
    with pytest.raises(ModfuseError, match=r"not a encoder: expected a subclass of Module"):
        ENCODERS.get("os.path.join")


# ---------------------------------------------------------------- blocks: MONAI, timm, class_path


@pytest.fixture(scope="module")
def cli_block(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """best.ckpt of ``modfuse fit`` on one LegoBlock: recipes/lego.yaml's X-ray block, whose
    encoder is a ``class_path`` (a MONAI Regressor wrapped by WrappedEncoder)."""
    from modfuse.cli import main

    recipe = yaml.safe_load((ROOT / "recipes" / "lego.yaml").read_text())
    (xray,) = [
        b
        for b in recipe["model"]["init_args"]["model"]["init_args"]["blocks"]
        if "class_path" in b["init_args"]["encoder"]
    ]
    recipe["model"]["init_args"]["model"] = xray
    recipe["test_after_fit"] = False
    root = tmp_path_factory.mktemp("block")
    (root / "block.yaml").write_text(yaml.safe_dump(recipe))
    mp = pytest.MonkeyPatch()
    mp.setenv("MODFUSE_CACHE", str(tmp_path_factory.mktemp("cache")))
    args = ["fit", "--config", str(root / "block.yaml"), "--trainer.max_epochs", "1"]
    args += ["--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--trainer.default_root_dir"]
    args += [str(root), "--data.init_args.n", "48", "--data.init_args.batch_size", "16"]
    try:
        assert main(args) == 0
    finally:
        mp.undo()
    return root / "checkpoints" / "best.ckpt"


def image_batch(n: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    present = {m: torch.tensor([i % 3 != k for i in range(n)]) for k, m in enumerate(("xray", "dn", "vit"))}
    shapes = {"xray": (1, 64, 64), "dn": (1, 32, 32), "vit": (3, 32, 32)}
    tensors = {f"present.{m}": p for m, p in present.items()}
    tensors.update({f"input.{m}": torch.randn(int(present[m].sum()), *s, generator=g) for m, s in shapes.items()})
    return tensors


READ_BATCH = """
    from modfuse.data.batch import ModalityBatch
    def as_batch(t):
        mods = [k.split(".", 1)[1] for k in t if k.startswith("present.")]
        n = len(t["present." + mods[0]])
        return ModalityBatch({m: t["input." + m] for m in mods}, {m: t["present." + m] for m in mods}, None, list(range(n)))
"""


def test_monai_timm_and_class_path_blocks_merge_with_the_cli_and_reload_in_a_new_process(
    cli_block: Path, tmp_path: Path
) -> None:
    import timm
    from monai.networks.nets import DenseNet121

    shared = {"latent_shape": (16, 32), "depth": 1, "heads": 4}  # the recipe's block settings
    dense = wrap(DenseNet121(spatial_dims=2, in_channels=1, out_channels=8), out_dim=8)
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, num_classes=0, global_pool="", depth=2
    )
    blocks = {
        "dn": perturb(LegoBlock(dense, "dn", **shared), seed=2, encoders=False),
        "vit": perturb(
            LegoBlock(wrap(vit, example=torch.zeros(2, 3, 32, 32)), "vit", **shared), seed=3, encoders=False
        ),
    }
    assert blocks["vit"].encoder.out_tokens == 17  # 16 patches + the class token
    paths = [str(cli_block)]
    for m, blk in blocks.items():
        paths.append(str(modfuse.save(blk, tmp_path / f"{m}.safetensors")))
    merged_path = tmp_path / "merged.safetensors"
    out = subprocess.run(
        ["modfuse", "merge", *paths, "--weights", "2", "1", "1", "-o", str(merged_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "modalities : xray, dn, vit" in out.stdout

    tensors = image_batch()
    save_file(tensors, str(tmp_path / "batch.safetensors"))
    namespace: dict = {}
    exec(textwrap.dedent(READ_BATCH), namespace)
    batch = namespace["as_batch"](tensors)
    expected = merge([load_any(cli_block), *blocks.values()], weights=[2, 1, 1]).eval()
    with torch.no_grad():
        want = expected(batch).prediction
    code = (
        READ_BATCH
        + f"""
    import torch, modfuse
    from safetensors.torch import load_file, save_file
    model = modfuse.load({str(merged_path)!r})
    with torch.no_grad():
        out = model(as_batch(load_file({str(tmp_path / "batch.safetensors")!r}))).prediction
    save_file({{"y": out}}, {str(tmp_path / "out.safetensors")!r})
    print(type(model).__name__, [type(b.encoder.module).__name__ for b in model.blocks])
    """
    )
    printed = run_python(code).stdout.strip()
    assert printed == "LegoMerge ['Regressor', 'DenseNet121', 'VisionTransformer']"
    got = load_file(str(tmp_path / "out.safetensors"))["y"]
    assert want.shape == (6, 1) and torch.isfinite(want).all() and torch.equal(want, got)
    with safe_open(str(merged_path), framework="pt") as f:
        config = json.loads(f.metadata()["modfuse_config"])
    assert (
        config["blocks"][0]["encoder"]["init_args"]["module"]["class_path"] == "monai.networks.nets.regressor.Regressor"
    )


# ---------------------------------------------------------------- entry points

USER_PACKAGE = """
import torch
from torch import nn


class TinyEncoder(nn.Module):
    def __init__(self, num_features: int, out_dim: int = 4) -> None:
        super().__init__()
        self.linear = nn.Linear(num_features, out_dim)
        self.out_dim = out_dim

    def forward(self, x):
        return torch.tanh(self.linear(x))


def doubled_mean(spectra, weights):
    w = weights[:, :, None, None]
    return 2 * (spectra * w).sum(1) / w.sum(1).clamp_min(1e-8)
"""

ENTRY_POINTS = """\
[modfuse.encoders]
tiny-user = mfuser:TinyEncoder

[modfuse.merge_methods]
doubled-mean = mfuser:doubled_mean
"""


def test_a_user_encoder_and_merge_method_declared_by_entry_point_load_in_a_new_process(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "mfuser").mkdir(parents=True)
    (site / "mfuser" / "__init__.py").write_text(USER_PACKAGE)
    dist = site / "mfuser-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mfuser\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    model_path, batch_path = tmp_path / "user.safetensors", tmp_path / "batch.safetensors"
    save_file({"a": torch.randn(6, D), "b": torch.randn(6, D)}, str(batch_path))
    prelude = f"""
    import torch, modfuse
    from safetensors.torch import load_file, save_file
    from modfuse.data.batch import ModalityBatch
    t = load_file({str(batch_path)!r})
    batch = ModalityBatch(t, {{m: torch.ones(6, dtype=torch.bool) for m in t}}, None, list(range(6)))
    """
    save_code = (
        prelude
        + f"""
    from modfuse import LegoBlock, merge
    from modfuse.encoders import available
    from modfuse.lego import available_methods
    assert "tiny-user" in available() and "doubled-mean" in available_methods()
    blocks = [LegoBlock({{"name": "tiny-user", "num_features": {D}}}, m, latent_shape=(8, 16), heads=2) for m in "ab"]
    for i, b in enumerate(blocks):
        torch.manual_seed(i)
        with torch.no_grad():
            for p in b.parameters():
                p.add_(0.2 * torch.randn_like(p))
    model = merge(blocks, method="doubled-mean").eval()
    modfuse.save(model, {str(model_path)!r})
    save_file({{"y": model(batch).prediction.detach()}}, {str(tmp_path / "want.safetensors")!r})
    """
    )
    run_python(save_code, PYTHONPATH=str(site))
    with safe_open(str(model_path), framework="pt") as f:
        config = json.loads(f.metadata()["modfuse_config"])
    # saved by name: the new process finds both through the entry points
    assert config["blocks"][0]["encoder"] == {"name": "tiny-user", "num_features": D}
    assert config["method"] == "doubled-mean"
    load_code = (
        prelude
        + f"""
    import sys
    model = modfuse.load({str(model_path)!r})
    assert "mfuser" in sys.modules
    save_file({{"y": model(batch).prediction.detach()}}, {str(tmp_path / "got.safetensors")!r})
    """
    )
    run_python(load_code, PYTHONPATH=str(site))
    want = load_file(str(tmp_path / "want.safetensors"))["y"]
    got = load_file(str(tmp_path / "got.safetensors"))["y"]
    assert want.shape == (6, 1) and torch.equal(want, got)


def test_a_checkpoint_without_a_describable_model_says_how_to_load_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from modfuse.training.task import MODEL_CONFIG_KEY, FusionTask

    enc = wrap(nn.Sequential(nn.Linear(D, 8), Activation(torch.tanh)), out_dim=8)
    task = FusionTask(fusion.build("early", encoders={"a": enc}, tasks="binary"))
    import lightning

    checkpoint = {
        "state_dict": task.state_dict(),
        "hyper_parameters": dict(task.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    task.on_save_checkpoint(checkpoint)
    assert MODEL_CONFIG_KEY not in checkpoint and "saved without a model config" in caplog.text
    torch.save(checkpoint, tmp_path / "x.ckpt")
    with pytest.raises(ModfuseError, match=r"x\.ckpt.*pass model=<the model>|pass model=<the model>.*x\.ckpt"):
        FusionTask.load_from_checkpoint(tmp_path / "x.ckpt")
    # with the model given, its weights load (still with weights_only=True)
    loaded = FusionTask.load_from_checkpoint(
        tmp_path / "x.ckpt", model=fusion.build("early", encoders={"a": enc}, tasks="binary")
    )
    for k, v in task.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
