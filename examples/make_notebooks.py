"""Write the example notebooks (outputs cleared): ``python examples/make_notebooks.py``.

Each notebook reads ``MODFUSE_EXAMPLES_TINY=1`` to run on tiny settings (CI), and ends with a
cell that checks its own results and prints a line starting with ``CHECK``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """%matplotlib inline
import os
from pathlib import Path

import numpy as np
import torch

TINY = os.environ.get("MODFUSE_EXAMPLES_TINY") == "1"  # CI runs the notebooks on tiny settings
torch.set_num_threads(1 if TINY else max(1, torch.get_num_threads()))
"""

TRAINER = (
    "trainer = L.Trainer(max_epochs=EPOCHS, logger=False, enable_checkpointing=False,\n"
    "                    enable_progress_bar=not TINY, enable_model_summary=False)\n"
)

CLINICAL = [
    new_markdown_cell(
        "# Clinical cohort: X-ray (DICOM) + ECG (WFDB) + labs, with missing modalities\n\n"
        "The synthetic quickstart cohort is written in real file formats (DICOM, WFDB, CSV) and read "
        "back by modfuse's readers. Many patients lack one or two modalities. We train a sequential "
        "(MultiModN-style) fusion model with modality dropout, evaluate it on every subset of "
        "modalities, see how each modality's step moves each patient's risk, and explain the "
        "predictions with exact modality Shapley values and attributions inside each modality "
        "(lab columns, ECG leads over seconds, X-ray pixels)."
    ),
    new_code_cell(
        SETUP
        + "N = 80 if TINY else 600\nEPOCHS = 1 if TINY else 15\nSTEPS = 8 if TINY else 32  # integrated-gradients steps"
    ),
    new_code_cell(
        "from modfuse.datasets import synthetic_cohort\n\n"
        "cohort = synthetic_cohort(N, seed=0)\n"
        "cohort.table[['label', 'has_xray', 'has_ecg', 'has_labs']].mean()"
    ),
    new_code_cell(
        "from modfuse import MultiModalDataModule\n"
        "from modfuse.robust import ModalityDropout\n\n"
        "dataset = cohort.dataset(in_memory=True)  # each file is parsed once, then kept\n"
        "datamodule = MultiModalDataModule(dataset, split='stratified', batch_size=32, seed=0,\n"
        "                                  train_transform=ModalityDropout(0.2, seed=0))\n"
        "dataset.present_matrix().mean()"
    ),
    new_code_cell(
        "import lightning as L\n\n"
        "from modfuse import FusionTask\n"
        "from modfuse.encoders import build as encoder\n"
        "from modfuse.fusion import build\n\n"
        "encoders = {\n"
        "    'xray': encoder('xray', in_channels=1, out_dim=64),\n"
        "    'ecg': encoder('ecg', leads=12, widths=(16, 32), blocks=1, out_dim=64),\n"
        "    'labs': encoder('tabular', num_features=5, hidden=(32,), out_dim=64),\n"
        "}\n"
        "model = build('sequential', encoders=encoders, tasks='binary', state_dim=64)\n"
        "task = FusionTask(model, lr=2e-3)\n" + TRAINER + "trainer.fit(task, datamodule)\n"
        "test = trainer.test(task, datamodule, verbose=False)[0]\n"
        "test"
    ),
    new_markdown_cell(
        "## Every subset of modalities\n\nThe same trained model predicts from any non-empty subset: "
        "`evaluate_subsets` evaluates each test patient with only the modalities of the subset "
        "(among those the patient has)."
    ),
    new_code_cell(
        "from modfuse.robust import evaluate_subsets\n"
        "from modfuse.robust.report import plot_subsets\n\n"
        "model.eval()\n"
        "subsets = evaluate_subsets(model, datamodule)\n"
        "subsets[['subset', 'auroc', 'n_observed']]"
    ),
    new_code_cell("plot_subsets(subsets, 'auroc')"),
    new_markdown_cell(
        "## How each modality's step moves the prediction\n\nThe sequential model updates a state "
        "one modality at a time and predicts after every step; `contributions()` gives the change "
        "of the predicted probability at each step (exactly 0 where the patient lacks the modality)."
    ),
    new_code_cell(
        "from modfuse.interpret import plot_sequential\n\n"
        "batch = next(iter(datamodule.test_dataloader()))\n"
        "contributions = model.contributions(batch)\n"
        "plot_sequential(contributions, samples=batch.ids[:6], ylabel='probability of the outcome')"
    ),
    new_code_cell("plot_sequential(contributions, cohort=True, ylabel='probability of the outcome')"),
    new_markdown_cell(
        "## Which modality drove each prediction\n\nExact modality Shapley values (the model runs on "
        "all 2^3 subsets): for each patient they add up to the prediction with all its modalities "
        "minus the prediction with none."
    ),
    new_code_cell(
        "from modfuse.interpret import modality_shapley, plot_cohort, plot_waterfall\n\n"
        "result = modality_shapley(model, datamodule.test_dataloader())\n"
        "plot_cohort(result)"
    ),
    new_code_cell("plot_waterfall(result, result.values.index[0])"),
    new_markdown_cell(
        "## Inside each modality, in the data's own terms\n\nIntegrated gradients (captum) over each "
        "modality's input; the axes are labelled with what the readers know: the lab columns, the "
        "ECG lead names and sampling rate, the X-ray pixels."
    ),
    new_code_cell(
        "from modfuse.interpret import (feature_attributions, modality_info, plot_ecg_saliency,\n"
        "                               plot_feature_importance, plot_pixel_attribution)\n\n"
        "labs = feature_attributions(model, batch, 'labs', n_steps=STEPS, max_samples=8 if TINY else None)\n"
        "plot_feature_importance(labs.values.abs(), modality_info(datamodule, 'labs').feature_names,\n"
        "                        title='labs: mean |attribution| per column')"
    ),
    new_code_cell(
        "ecg = feature_attributions(model, batch, 'ecg', n_steps=STEPS, max_samples=2)\n"
        "info = modality_info(datamodule, 'ecg')\n"
        "plot_ecg_saliency(ecg.inputs[0, :3], ecg.values[0, :3], fs=info.fs, lead_names=info.lead_names[:3])"
    ),
    new_code_cell(
        "xray = feature_attributions(model, batch, 'xray', n_steps=STEPS, max_samples=2)\n"
        "plot_pixel_attribution(xray.inputs[0], xray.values[0], title=f'patient {xray.ids[0]}')"
    ),
    new_markdown_cell(
        "## Robustness\n\n`sweep` removes modalities at random (MCAR) or more often for positive "
        "patients (MNAR) and plots the metric against the fraction actually removed; `subset_gap` "
        "trains a specialist on each subset and shows how far the fused model is from it."
    ),
    new_code_cell(
        "from modfuse.robust import sweep\n"
        "from modfuse.robust.report import plot_sweep\n\n"
        "curve = sweep(model, datamodule, rates=[0.0, 0.3, 0.6, 0.9], kind=['mcar', 'mnar'],\n"
        "              seeds=[0] if TINY else [0, 1, 2])\n"
        "plot_sweep(curve, 'auroc')"
    ),
    new_code_cell(
        "from modfuse.interpret import plot_subset_gap\n"
        "from modfuse.robust import subset_gap\n\n"
        "gaps = subset_gap(model, datamodule, max_epochs=EPOCHS,\n"
        "                  task_kwargs={'lr': 2e-3}, subsets=[('xray',), ('ecg',), ('labs',)])\n"
        "plot_subset_gap(gaps)"
    ),
    new_code_cell(
        "gap = (result.values.sum(axis=1) - (result.full - result.base)).abs().max()\n"
        "assert result.values.shape[1] == 3 and gap < 1e-4, gap\n"
        "assert len(subsets) == 7 and 0.0 <= test['test/auroc'] <= 1.0\n"
        "assert labs.values.shape[1] == 5 and len(gaps) == 3 and curve['missing_fraction'].max() > 0.2\n"
        "print(f'CHECK clinical ok: {len(result.values)} patients explained, additivity gap {gap:.1e}')"
    ),
]

GEOSCIENCE = [
    new_markdown_cell(
        "# Geoscience: Sentinel-2 chips, NDVI time series with cloud gaps, elevation\n\n"
        "1. Chips of a real Sentinel-2 L1C scene (13 bands at 10, 20 and 60 m) read through "
        "modfuse's raster reader, a small CNN trained on them, and which bands and pixels it uses.\n"
        "2. Per-pixel land cover of a real EOPatch from an NDVI time series (cloudy dates are gaps, "
        "never zero-filled into the model) fused with terrain, split by spatial blocks.\n"
        "3. Robustness to a missing modality, and which dates the model looks at.\n\n"
        "The data are read from `../shared/data` (or `MODFUSE_SHARED_DATA`)."
    ),
    new_code_cell(
        SETUP + "ROOT = Path.cwd() if (Path.cwd() / 'pyproject.toml').exists() else Path.cwd().parent\n"
        "DATA = Path(os.environ.get('MODFUSE_SHARED_DATA', ROOT.parent / 'shared' / 'data'))\n"
        "assert DATA.is_dir(), f'this notebook reads the real scenes in {DATA}'\n"
        "EPOCHS = 3 if TINY else 20"
    ),
    new_markdown_cell(
        "## Sentinel-2 chips through the raster reader\n\nThe scene has no labels, so the chips get a "
        "*known-answer* label: whether the chip is greener than the median chip (mean NDVI from "
        "B04 and B08). A model that learnt it should lean on the red and near-infrared bands; "
        "the band importance below shows whether it does (the tiny CI run trains too briefly to)."
    ),
    new_code_cell(
        "from modfuse import MultiModalDataModule, MultiModalDataset\n"
        "from modfuse.data.readers import RasterChipSource\n\n"
        "chips = RasterChipSource(DATA / 'sentinel2-l1c', size=32, n_random=96 if TINY else 600, seed=0,\n"
        "                         res=20.0, normalize=True)\n"
        "raw = RasterChipSource(DATA / 'sentinel2-l1c', size=32, n_random=len(chips), seed=0, res=20.0,\n"
        "                       bands=['B04', 'B08'])\n"
        "red_nir = np.stack([raw.load(i).numpy() for i in raw.ids])\n"
        "ndvi = ((red_nir[:, 1] - red_nir[:, 0]) / (red_nir[:, 1] + red_nir[:, 0] + 1e-6)).mean((1, 2))\n"
        "green = (ndvi > np.median(ndvi)).astype(np.int64)\n"
        "chip_data = MultiModalDataset({'s2': chips}, targets=green, ids=chips.ids)\n"
        "chip_dm = MultiModalDataModule(chip_data, split='stratified', batch_size=32, seed=0)\n"
        "print(len(chips), 'chips of', len(chips.bands), 'bands; mean NDVI', ndvi.min().round(2), 'to', ndvi.max().round(2))"
    ),
    new_code_cell(
        "import lightning as L\n\n"
        "from modfuse import FusionTask, TaskSpec\n"
        "from modfuse.encoders import build as encoder\n"
        "from modfuse.fusion import build\n\n"
        "chip_model = build('early', encoders={'s2': encoder('spectral', bands=13, backbone='small', out_dim=32)},\n"
        "                   tasks='binary')\n" + TRAINER + "trainer.fit(FusionTask(chip_model, lr=3e-3), chip_dm)\n"
        "chip_model.eval()\n"
        "from modfuse.robust import evaluate\n"
        "evaluate(chip_model, chip_dm)"
    ),
    new_code_cell(
        "from modfuse.interpret import (band_importance, feature_attributions, modality_info,\n"
        "                               plot_band_importance, plot_pixel_attribution)\n\n"
        "chip_batch = next(iter(chip_dm.test_dataloader()))\n"
        "chip_attr = feature_attributions(chip_model, chip_batch, 's2', max_samples=16, n_steps=16 if TINY else 32)\n"
        "s2 = modality_info(chip_dm, 's2')\n"
        "plot_band_importance(band_importance(chip_attr.values), s2.band_names, s2.wavelengths)"
    ),
    new_code_cell("plot_pixel_attribution(chip_attr.inputs[0], chip_attr.values[0], s2.band_names)"),
    new_markdown_cell("## Land cover from NDVI series + terrain"),
    new_code_cell(
        "from modfuse.data.datamodules import EOPatchLandCoverDataModule\n\n"
        "land = EOPatchLandCoverDataModule(DATA / 'eopatch-slovenia', pixel_stride=3 if TINY else 1,\n"
        "                                  batch_size=128, seed=0)\n"
        "land.describe()"
    ),
    new_code_cell(
        "from modfuse.robust import ModalityDropout\n\n"
        "land.train_transform = ModalityDropout(0.3, seed=0)\n"
        "land_model = build('early', tasks=TaskSpec('multiclass', num_outputs=len(land.classes)), encoders={\n"
        "    'series': encoder('timeseries', channels=1, kind='transformer', hidden=32, layers=1, out_dim=32),\n"
        "    'elevation': encoder('tabular', num_features=3, hidden=(16,), out_dim=32),\n"
        "})\n" + TRAINER + "trainer.fit(FusionTask(land_model, lr=3e-3), land)\n"
        "land_model.eval()\n"
        "evaluate(land_model, land)"
    ),
    new_markdown_cell(
        "## Robustness to a missing modality\n\n`evaluate_subsets` scores the model with each "
        "modality alone and with both; `sweep` removes modalities at random and plots the score "
        "against the fraction of (pixel, modality) pairs actually removed."
    ),
    new_code_cell(
        "from modfuse.robust import evaluate_subsets, sweep\n"
        "from modfuse.robust.report import plot_subsets, plot_sweep\n\n"
        "land_subsets = evaluate_subsets(land_model, land, metric=['accuracy', 'f1'])\n"
        "plot_subsets(land_subsets, 'accuracy')"
    ),
    new_code_cell(
        "land_sweep = sweep(land_model, land, rates=[0.0, 0.3, 0.6, 0.9], kind='mcar',\n"
        "                   seeds=[0] if TINY else [0, 1, 2], metric='accuracy')\n"
        "plot_sweep(land_sweep, 'accuracy')"
    ),
    new_markdown_cell(
        "## Which dates the model looks at\n\nIntegrated gradients over the NDVI series of one test "
        "pixel, on the patch's acquisition dates; cloudy dates are gaps (grey ticks)."
    ),
    new_code_cell(
        "from modfuse.interpret import plot_time_attribution\n\n"
        "land_batch = next(iter(land.test_dataloader()))\n"
        "series_attr = feature_attributions(land_model, land_batch, 'series', max_samples=8, n_steps=16 if TINY else 32)\n"
        "first = land_batch.index('series')[0]\n"
        "plot_time_attribution(series_attr.inputs[0], series_attr.values[0], modality_info(land, 'series').timestamps,\n"
        "                      land_batch.inputs['series']['valid'][first], ['NDVI'],\n"
        "                      title=f'pixel {series_attr.ids[0]}: attribution per date')"
    ),
    new_code_cell(
        "top2 = set(band_importance(chip_attr.values).mean(0).argsort(descending=True)[:4].tolist())\n"
        "assert len(land_subsets) == 3 and land_subsets['accuracy'].between(0, 1).all()\n"
        "assert series_attr.values.shape[1:] == (68, 1) and land_sweep['missing_fraction'].max() > 0.2\n"
        "print(f'CHECK geoscience ok: {len(chips)} chips, {len(land.splits[\"test\"])} test pixels, '\n"
        "      f'accuracy with both modalities {land_subsets.accuracy.iloc[-1]:.2f}')"
    ),
]

MERGING = [
    new_markdown_cell(
        "# Merging models trained at two sites (Lego merge)\n\n"
        "Two hospitals each hold one modality of their own patients and train a unimodal block "
        "on it; they share only the trained weights. `modfuse.merge` combines the blocks without "
        "data and without training, and the merged model predicts from either modality or both. "
        "Before deploying, a site checks the merge on its own validation rows: the table that "
        "`modfuse merge ... --validate DATA` prints.\n\n"
        "Data: the breast cancer fine-needle-aspirate cases (real, shipped with scikit-learn); "
        "the 'mean' and 'worst' measurement groups play the two modalities."
    ),
    new_code_cell(SETUP + "EPOCHS = 2 if TINY else 20"),
    new_code_cell(
        "from sklearn.datasets import load_breast_cancer\n\n"
        "from modfuse import MultiModalDataModule, MultiModalDataset\n\n"
        "X, y = load_breast_cancer(return_X_y=True)\n"
        "X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)\n"
        "data = {'mean': X[:, :10], 'worst': X[:, 20:]}\n"
        "dataset = MultiModalDataset.from_arrays(data, y.astype(np.float32))\n"
        "datamodule = MultiModalDataModule(dataset, split='stratified', batch_size=32, seed=0)\n"
        "datamodule.setup()\n"
        "train = datamodule.splits['train']\n"
        "rng = np.random.default_rng(0)\n"
        "site = rng.random(len(train)) < 0.5\n"
        "site_a, site_b = train[site], train[~site]  # disjoint patients\n"
        "len(site_a), len(site_b)"
    ),
    new_code_cell(
        "import time\n\n"
        "from modfuse import LegoBlock, merge\n"
        "from modfuse.lego.workflow import fit_block\n\n"
        "def block(modality):\n"
        "    return LegoBlock({'name': 'tabular', 'num_features': 10, 'hidden': [32], 'out_dim': 32}, modality,\n"
        "                     latent_shape=(16, 32), depth=1, heads=4)\n\n"
        "block_a = fit_block(block('mean'), datamodule, max_epochs=EPOCHS, rows=site_a)   # at site A\n"
        "block_b = fit_block(block('worst'), datamodule, max_epochs=EPOCHS, rows=site_b)  # at site B\n"
        "start = time.perf_counter()\n"
        "merged = merge([block_a, block_b], method='harmonic')  # no data, no training\n"
        "print(f'merging took {1e3 * (time.perf_counter() - start):.1f} ms')"
    ),
    new_markdown_cell(
        "## The merge validation table\n\n`subset_report` is what `modfuse merge --validate` runs: for "
        "every subset of modalities, the merged model against each block alone on validation rows "
        "that have the subset (`merged - best` > 0: the merge helps)."
    ),
    new_code_cell(
        "from modfuse.lego.validate import subset_report\n\n"
        "validation = subset_report(merged, datamodule.val_dataloader())\n"
        "validation"
    ),
    new_markdown_cell("## Test AUROC of the merged model on every subset"),
    new_code_cell(
        "from modfuse.robust import evaluate_subsets\n"
        "from modfuse.robust.report import plot_subsets\n\n"
        "merged_subsets = evaluate_subsets(merged, datamodule, metric='auroc')\n"
        "plot_subsets(merged_subsets, 'auroc')"
    ),
    new_code_cell(
        "from modfuse.interpret import modality_shapley, plot_cohort\n\n"
        "plot_cohort(modality_shapley(merged, datamodule.test_dataloader()))"
    ),
    new_code_cell(
        "assert merged_subsets['auroc'].between(0, 1).all() and merged.modalities == ['mean', 'worst']\n"
        "assert len(validation) == 3 and {'merged', 'merged - best'} <= set(validation.columns)\n"
        "print(f\"CHECK merging ok: merged AUROC with both modalities {merged_subsets['auroc'].iloc[-1]:.3f}\")"
    ),
]


def write(name: str, cells: list) -> Path:
    nb = new_notebook(
        cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    path = HERE / name
    nbformat.write(nb, path)
    return path


def main() -> None:
    for name, cells in (
        ("01_clinical_cohort.ipynb", CLINICAL),
        ("02_geoscience.ipynb", GEOSCIENCE),
        ("03_merging_two_sites.ipynb", MERGING),
    ):
        print(write(name, cells))


if __name__ == "__main__":
    main()
