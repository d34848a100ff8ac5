"""Per-pixel land cover on a real Sentinel-2 patch (eo-learn's TestEOPatch, Slovenia).

Two modalities per pixel (101 x 100 pixels at 10 m, 68 dates 2015-07 .. 2017-12):

- ``ndvi``: the NDVI time series (68 dates). A date is missing (NaN) where the observation is
  cloudy (``CLM == 1``) or invalid (``IS_VALID`` false): about 40% of all observations.
  Encoded by modfuse's ``timeseries`` encoder when registered, else by the NaN-aware
  ``tabular`` encoder (each gap becomes 0 plus a missing indicator).
- ``elevation``: terrain from the DEM: elevation, slope (gradient magnitude) and elevation
  relative to the 5 x 5 neighbourhood mean.

Label: ``LULC`` (classes 1, 2, 3, 4, 8; class 0 = "no data" pixels are dropped). Neighbouring
pixels are correlated, so pixels are split by spatial blocks (all pixels of a block land in
one partition). Models are trained with per-sample modality dropout (so every model can
predict from either modality alone) and evaluated with both modalities and with each removed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from benchmarks import common

PATCH = "eopatch-slovenia"


@dataclass
class Settings:
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 30  # at most; training stops when validation accuracy stalls for `patience` epochs
    patience: int | None = 8
    lego_latent: tuple[int, int] = (16, 64)  # (l_c, l_d): each encoder gives one token
    batch_size: int = 256
    lr: float = 3e-3
    hidden: int = 64
    block: int = 20  # pixels per block edge (200 m)
    modality_dropout: float = 0.3


QUICK = Settings(seeds=(0,), epochs=8, patience=None, lego_latent=(8, 32))


def load() -> dict[str, Any]:
    """Pixel table: NDVI series with NaN gaps, terrain features, labels, block ids."""
    root = common.DATA / PATCH
    ndvi = np.load(root / "data" / "NDVI.npy")[..., 0]  # (T, H, W)
    valid = np.load(root / "mask" / "IS_VALID.npy")[..., 0].astype(bool)
    cloud = np.load(root / "mask" / "CLM.npy")[..., 0].astype(bool)
    dem = np.load(root / "data_timeless" / "DEM.npy")[..., 0].astype(np.float64)
    lulc = np.load(root / "mask_timeless" / "LULC.npy")[..., 0].astype(int)
    dates = json.loads((root / "timestamps.json").read_text())
    t, h, w = ndvi.shape
    observed = valid & ~cloud
    series = np.where(observed, ndvi, np.nan).reshape(t, h * w).T.astype(np.float32)  # (H*W, T)

    gy, gx = np.gradient(dem, 10.0)  # 10 m pixels
    slope = np.degrees(np.arctan(np.hypot(gx, gy)))
    pad = np.pad(dem, 2, mode="edge")
    local = np.mean([pad[i : i + h, j : j + w] for i in range(5) for j in range(5)], axis=0)
    terrain = np.stack([dem, slope, dem - local], axis=-1).reshape(h * w, 3).astype(np.float32)

    rows, cols = np.divmod(np.arange(h * w), w)
    keep = lulc.reshape(-1) != 0
    classes = np.unique(lulc.reshape(-1)[keep])
    label = np.searchsorted(classes, lulc.reshape(-1)[keep])
    return {
        "ndvi": series[keep],
        "elevation": terrain[keep],
        "label": label,
        "classes": classes,
        "rows": rows[keep],
        "cols": cols[keep],
        "dates": len(dates),
        "observed_fraction": float(observed.mean()),
    }


def block_split(data: dict[str, Any], block: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Spatial-block split (val 10%, test 20% of the blocks)."""
    try:
        from modfuse.data.splits import spatial_block_split

        return spatial_block_split(data["cols"], data["rows"], block, val_fraction=0.1, test_fraction=0.2, seed=seed)
    except ImportError:  # the datasets helpers are not there: the datamodule's group split does the same
        from modfuse.data.splits import split_indices

        blocks = (data["rows"] // block) * 1000 + data["cols"] // block
        return split_indices(len(blocks), "group", 0.1, 0.2, groups=blocks, seed=seed), blocks


def encoder_factories(
    data: dict[str, Any], train: np.ndarray, hidden: int
) -> tuple[dict[str, Callable[[], nn.Module]], str]:
    from modfuse.data.transforms import Standardizer
    from modfuse.encoders import build

    t = data["ndvi"].shape[1]
    elevation_stats = Standardizer.fit(data["elevation"], rows=train).to_dict()
    ndvi_stats = Standardizer.fit(data["ndvi"], rows=train).to_dict()  # cloud gaps (NaN) are ignored

    def elevation() -> nn.Module:
        return build("tabular", num_features=3, hidden=(hidden,), out_dim=hidden, **elevation_stats)

    def ndvi_tabular() -> nn.Module:
        return build(
            "tabular",
            num_features=t,
            hidden=(2 * hidden, hidden),
            out_dim=hidden,
            **ndvi_stats,
        )

    return {"ndvi": ndvi_tabular, "elevation": elevation}, "tabular (NaN-aware: gap -> 0 + missing indicator per date)"


def run(
    settings: Settings, command: str, log: Callable[[str], None] = print, out_dir: Path = common.RESULTS
) -> pd.DataFrame:
    from sklearn.metrics import accuracy_score, f1_score

    from modfuse import MultiModalDataModule, MultiModalDataset

    common.quiet()
    data = load()
    n_classes = len(data["classes"])
    ds = MultiModalDataset.from_arrays({"ndvi": data["ndvi"], "elevation": data["elevation"]}, data["label"])
    try:
        from modfuse.robust import ModalityDropout
    except ImportError:
        ModalityDropout = None
    rows = []
    for seed in settings.seeds:
        splits, blocks = block_split(data, settings.block, seed)
        factories, ndvi_impl = encoder_factories(data, splits["train"], settings.hidden)
        y_test = data["label"][splits["test"]]
        present = sorted(np.unique(y_test).tolist())
        plan = [(s, s, {}) for s in common.strategies(exclude=("unimodal",))]
        plan += [(f"unimodal: {m}", "unimodal", {"modality": m}) for m in ("ndvi", "elevation")]
        for label, strategy, kwargs in plan:
            common.seed_all(seed)
            transform = None
            if ModalityDropout is not None and strategy != "unimodal" and settings.modality_dropout > 0:
                transform = ModalityDropout(settings.modality_dropout, seed=seed)
            dm = MultiModalDataModule(
                ds, splits=splits, batch_size=settings.batch_size, seed=seed, train_transform=transform
            )
            if strategy in common.LEGO:
                kwargs = {**kwargs, "latent_shape": settings.lego_latent}
            try:
                model = common.build_strategy(
                    strategy, lambda fs=factories: {m: f() for m, f in fs.items()}, _multiclass(n_classes), **kwargs
                )
                result = common.fit(model, dm, epochs=settings.epochs, lr=settings.lr, patience=settings.patience)
            except Exception as exc:
                log(f"  seed {seed} {label}: FAILED {type(exc).__name__}: {exc}")
                rows.append(dict(seed=seed, model=label, evaluated_with="both", error=str(exc)[:200]))
                continue
            subsets = (
                {"both": ("ndvi", "elevation")}
                if strategy != "unimodal"
                else {kwargs["modality"]: (kwargs["modality"],)}
            )
            if strategy != "unimodal":
                subsets |= {"ndvi only (elevation removed)": ("ndvi",), "elevation only (ndvi removed)": ("elevation",)}
            for name, keep in subsets.items():
                proba = common.predict(result.model, _Restrict(dm.test_dataloader(), keep))
                pred = proba.argmax(1)
                rows.append(
                    dict(
                        seed=seed,
                        model=label,
                        evaluated_with=name,
                        macro_f1=f1_score(y_test, pred, labels=present, average="macro", zero_division=0),
                        accuracy=accuracy_score(y_test, pred),
                        n_test=len(y_test),
                        test_blocks=len(np.unique(blocks[splits["test"]])),
                        train_seconds=round(result.seconds, 1),
                        best_epoch=result.best_epoch,
                        epochs_run=result.epochs,
                        error="",
                    )
                )
                log(
                    f"  seed {seed} {label} [{name}]: macro-F1 {rows[-1]['macro_f1']:.3f} acc {rows[-1]['accuracy']:.3f}"
                )
    raw = pd.DataFrame(rows)
    write(raw, data, settings, command, ndvi_impl, ModalityDropout is not None, out_dir)
    return raw


def _multiclass(n: int) -> Any:
    from modfuse import TaskSpec

    return TaskSpec("multiclass", num_outputs=n)


class _Restrict:
    """A loader whose batches keep only the modalities ``keep`` (the rest marked absent)."""

    def __init__(self, loader: Any, keep: tuple[str, ...]) -> None:
        self.loader, self.keep = loader, keep

    def __iter__(self) -> Any:
        for batch in self.loader:
            yield batch.with_modalities(self.keep)


def write(
    raw: pd.DataFrame,
    data: dict[str, Any],
    s: Settings,
    command: str,
    ndvi_impl: str,
    dropout: bool,
    out_dir: Path = common.RESULTS,
) -> None:
    ok = raw[raw.get("macro_f1", pd.Series(dtype=float)).notna()] if "macro_f1" in raw else raw.iloc[:0]
    table = []
    for (model, evaluated), grp in ok.groupby(["model", "evaluated_with"], sort=False):
        table.append(
            {
                "model": model,
                "evaluated with": evaluated,
                f"macro-F1 ({len(grp)} splits)": common.mean_sd(grp["macro_f1"]),
                "accuracy": common.mean_sd(grp["accuracy"]),
            }
        )
    counts = np.bincount(data["label"], minlength=len(data["classes"]))
    notes = [
        f"{len(data['label'])} labelled pixels (class 0 'no data' dropped), classes {data['classes'].tolist()} "
        f"with counts {counts.tolist()}; {data['dates']} dates, {100 * data['observed_fraction']:.0f}% of the "
        "NDVI observations cloud-free and valid (the rest are gaps)",
        f"split: {s.block} x {s.block}-pixel spatial blocks ({10 * s.block} m), 70/10/20% of the blocks to "
        "train/val/test, a new block split per seed; macro-F1 over the classes present in each test split",
        f"training: FusionTask, AdamW lr {s.lr}, one-cycle schedule over {s.epochs} epochs"
        + (f", stopped early when validation accuracy did not improve for {s.patience} epochs" if s.patience else "")
        + f", batch {s.batch_size}, weights of the best validation epoch; Lego strategies with a "
        f"{s.lego_latent[0]}x{s.lego_latent[1]} latent (l_c x l_d), trained by their own stages "
        "(modfuse.training.runner: blocks apart, lego-fuse then the chain fine-tuned with its own modality dropout)"
        + (f"; fusion models with per-sample modality dropout {s.modality_dropout}" if dropout else ""),
        f"ndvi encoder: {ndvi_impl}; elevation encoder: tabular (elevation, slope, relative elevation)",
        "'removed' rows: the same trained model, evaluated with that modality marked absent for every test pixel",
    ]
    failed = raw[raw["error"].astype(str) != ""] if "error" in raw else raw.iloc[:0]
    if len(failed):
        notes.append("failed runs: " + "; ".join(f"{r.model} (seed {r.seed}): {r.error}" for r in failed.itertuples()))
    common.write_results(
        "remote_sensing",
        "Land cover per pixel, eopatch-slovenia (macro-F1 and accuracy; higher is better)",
        {"": pd.DataFrame(table)},
        raw,
        command=command,
        seeds=list(s.seeds),
        notes=notes,
        out_dir=out_dir,
    )
