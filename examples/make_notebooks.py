"""Write the example notebooks (outputs cleared): ``python examples/make_notebooks.py``.

Each notebook reads ``MODFUSE_EXAMPLES_TINY=1`` to run on tiny settings (CI), and ends with a
cell that checks its own results and prints a line starting with ``CHECK``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """import os
from pathlib import Path

import numpy as np
import torch

TINY = os.environ.get("MODFUSE_EXAMPLES_TINY") == "1"  # CI runs the notebooks on tiny settings
torch.set_num_threads(1 if TINY else max(1, torch.get_num_threads()))
"""

CLINICAL = [
    new_markdown_cell(
        "# Clinical cohort: X-ray (DICOM) + ECG (WFDB) + labs, with missing modalities\n\n"
        "The synthetic quickstart cohort is written in real file formats (DICOM, WFDB, CSV) and read "
        "back by modfuse's readers. Many patients lack one or two modalities. We train a sequential "
        "(MultiModN-style) fusion model with modality dropout, evaluate it on every subset of "
        "modalities, and explain each prediction with exact modality Shapley values."
    ),
    new_code_cell(SETUP + "N = 80 if TINY else 600\nEPOCHS = 1 if TINY else 15"),
    new_code_cell(
        "from modfuse.datasets import synthetic_cohort\n\n"
        "cohort = synthetic_cohort(N, seed=0)\n"
        "cohort.table[['label', 'has_xray', 'has_ecg', 'has_labs']].mean()"
    ),
    new_code_cell(
        "from modfuse import MultiModalDataModule\n"
        "from modfuse.robust import ModalityDropout\n\n"
        "dataset = cohort.dataset()\n"
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
        "task = FusionTask(model, lr=2e-3)\n"
        "trainer = L.Trainer(max_epochs=EPOCHS, logger=False, enable_checkpointing=False,\n"
        "                    enable_progress_bar=False, enable_model_summary=False)\n"
        "trainer.fit(task, datamodule)\n"
        "test = trainer.test(task, datamodule, verbose=False)[0]\n"
        "test"
    ),
    new_markdown_cell(
        "## Every subset of modalities\n\nThe same trained model predicts from any non-empty subset: "
        "here each test patient is evaluated with only the modalities of the subset (among those "
        "the patient has)."
    ),
    new_code_cell(
        "import pandas as pd\n"
        "from itertools import combinations\n"
        "from sklearn.metrics import roc_auc_score\n\n"
        "from modfuse.fusion.base import prediction_of\n\n"
        "model.eval()\n"
        "rows = []\n"
        "names = model.modalities\n"
        "for k in range(1, len(names) + 1):\n"
        "    for subset in combinations(names, k):\n"
        "        probs, labels = [], []\n"
        "        with torch.no_grad():\n"
        "            for batch in datamodule.test_dataloader():\n"
        "                b = batch.with_modalities(subset)\n"
        "                probs.append(torch.sigmoid(prediction_of(model(b))[:, 0]))\n"
        "                labels.append(batch.target)\n"
        "        p, y = torch.cat(probs).numpy(), torch.cat(labels).numpy()\n"
        "        auc = roc_auc_score(y, p) if len(set(y.tolist())) == 2 else float('nan')\n"
        "        rows.append({'modalities': ' + '.join(subset), 'AUROC': auc})\n"
        "subsets = pd.DataFrame(rows)\n"
        "subsets"
    ),
    new_markdown_cell(
        "## Which modality drove each prediction\n\nExact modality Shapley values (the model runs on "
        "all 2^3 subsets): for each patient they add up to the prediction with all its modalities "
        "minus the prediction with none."
    ),
    new_code_cell(
        "from modfuse.interpret.plots import plot_cohort, plot_waterfall\n"
        "from modfuse.interpret.shapley import modality_shapley\n\n"
        "result = modality_shapley(model, datamodule.test_dataloader())\n"
        "fig = plot_cohort(result)\n"
        "result.values.abs().mean()"
    ),
    new_code_cell("fig = plot_waterfall(result, result.values.index[0])"),
    new_code_cell(
        "gap = (result.values.sum(axis=1) - (result.full - result.base)).abs().max()\n"
        "assert result.values.shape[1] == 3 and gap < 1e-4, gap\n"
        "assert len(subsets) == 7 and 0.0 <= test['test/auroc'] <= 1.0\n"
        "print(f'CHECK clinical ok: {len(result.values)} patients explained, additivity gap {gap:.1e}')"
    ),
]

GEOSCIENCE = [
    new_markdown_cell(
        "# Geoscience: Sentinel-2 bands, NDVI time series with cloud gaps, elevation\n\n"
        "1. Read a real Sentinel-2 L1C scene (13 bands at 10, 20 and 60 m) and cut chips.\n"
        "2. Per-pixel land cover from an NDVI time series (cloudy dates are gaps, never zero-filled "
        "into the model as data) fused with elevation, split by spatial blocks.\n"
        "3. Robustness: more cloud gaps, and a modality removed.\n\n"
        "The real data are read from `../shared/data` when present; otherwise a small synthetic "
        "patch with the same layout is generated."
    ),
    new_code_cell(
        SETUP + "ROOT = Path.cwd() if (Path.cwd() / 'pyproject.toml').exists() else Path.cwd().parent\n"
        "DATA = Path(os.environ.get('MODFUSE_SHARED_DATA', ROOT.parent / 'shared' / 'data'))\n"
        "EPOCHS = 2 if TINY else 20\n"
        "print('real data' if DATA.is_dir() else 'synthetic data', DATA)"
    ),
    new_code_cell(
        "import rasterio\n"
        "from rasterio.enums import Resampling\n\n"
        "scene = DATA / 'sentinel2-l1c'\n"
        "bands = ['B01', 'B02', 'B03', 'B04', 'B05', 'B06', 'B07', 'B08', 'B8A', 'B09', 'B10', 'B11', 'B12']\n"
        "if scene.is_dir():\n"
        "    stack = []\n"
        "    for b in bands:  # co-register every band on the 20 m grid (516 x 516)\n"
        "        path = next(scene.glob(f'*{b}*.tif'))\n"
        "        with rasterio.open(path) as src:\n"
        "            stack.append(src.read(1, out_shape=(516, 516), resampling=Resampling.bilinear))\n"
        "    cube = np.stack(stack).astype(np.float32) / 10000.0  # reflectance\n"
        "else:\n"
        "    cube = np.random.default_rng(0).uniform(0, 0.4, size=(13, 516, 516)).astype(np.float32)\n"
        "chip = 64\n"
        "chips = cube[:, : 516 // chip * chip, : 516 // chip * chip].reshape(13, 516 // chip, chip, 516 // chip, chip)\n"
        "chips = chips.transpose(1, 3, 0, 2, 4).reshape(-1, 13, chip, chip)\n"
        "print(cube.shape, '->', chips.shape, 'chips of 13 bands')"
    ),
    new_code_cell(
        "import matplotlib.pyplot as plt\n\n"
        "rgb = np.clip(cube[[3, 2, 1]].transpose(1, 2, 0) * 3.5, 0, 1)\n"
        "fig, ax = plt.subplots(figsize=(4, 4))\n"
        "ax.imshow(rgb); ax.set_title('true colour (B04, B03, B02)'); ax.axis('off');"
    ),
    new_markdown_cell("## Land cover from NDVI series + elevation"),
    new_code_cell(
        "patch = DATA / 'eopatch-slovenia'\n"
        "if patch.is_dir():\n"
        "    ndvi = np.load(patch / 'data' / 'NDVI.npy')[..., 0]\n"
        "    valid = np.load(patch / 'mask' / 'IS_VALID.npy')[..., 0].astype(bool)\n"
        "    cloud = np.load(patch / 'mask' / 'CLM.npy')[..., 0].astype(bool)\n"
        "    dem = np.load(patch / 'data_timeless' / 'DEM.npy')[..., 0]\n"
        "    lulc = np.load(patch / 'mask_timeless' / 'LULC.npy')[..., 0].astype(int)\n"
        "    observed = valid & ~cloud\n"
        "else:  # synthetic patch: two classes with different seasonal NDVI curves, random clouds\n"
        "    rng = np.random.default_rng(0)\n"
        "    t, h, w = 40, 60, 60\n"
        "    lulc = 1 + (np.add.outer(np.arange(h), np.arange(w)) % 30 > 14).astype(int)\n"
        "    season = np.sin(np.linspace(0, 4 * np.pi, t))[:, None, None]\n"
        "    ndvi = 0.4 + 0.2 * season * (lulc == 1) + 0.05 * rng.normal(size=(t, h, w))\n"
        "    dem = 700 + 20 * (lulc == 2) + rng.normal(size=(h, w))\n"
        "    observed = rng.random((t, h, w)) > 0.4\n"
        "t, h, w = ndvi.shape\n"
        "keep = (lulc != 0).reshape(-1)\n"
        "series = np.where(observed, ndvi, np.nan).reshape(t, -1).T[keep].astype(np.float32)\n"
        "elevation = dem.reshape(-1, 1)[keep].astype(np.float32)\n"
        "classes, label = np.unique(lulc.reshape(-1)[keep], return_inverse=True)\n"
        "rows, cols = np.divmod(np.arange(h * w)[keep], w)\n"
        "if TINY:  # a 40 x 40 pixel corner\n"
        "    sel = (rows < 40) & (cols < 40)\n"
        "    series, elevation, label, rows, cols = series[sel], elevation[sel], label[sel], rows[sel], cols[sel]\n"
        "print(f'{len(label)} pixels, {t} dates, {100 * np.isnan(series).mean():.0f}% of observations are cloud gaps')"
    ),
    new_code_cell(
        "from modfuse import MultiModalDataModule, MultiModalDataset, TaskSpec\n"
        "from modfuse.data.datamodule import split_indices\n\n"
        "blocks = (rows // 10) * 1000 + cols // 10  # 10 x 10 pixel spatial blocks: neighbours stay together\n"
        "splits = split_indices(len(label), 'group', val_fraction=0.1, test_fraction=0.2, groups=blocks, seed=0)\n"
        "dataset = MultiModalDataset.from_arrays({'ndvi': series[:, :, None], 'elevation': elevation}, label)\n"
        "datamodule = MultiModalDataModule(dataset, splits=splits, batch_size=128, seed=0)\n"
        "{k: len(v) for k, v in splits.items()}"
    ),
    new_code_cell(
        "import lightning as L\n\n"
        "from modfuse import FusionTask\n"
        "from modfuse.encoders import build as encoder\n"
        "from modfuse.fusion import build\n"
        "from modfuse.robust import ModalityDropout\n\n"
        "datamodule.train_transform = ModalityDropout(0.3, seed=0)\n"
        "mu, sd = elevation.mean(0), elevation.std(0) + 1e-6\n"
        "encoders = {\n"
        "    'ndvi': encoder('timeseries', channels=1, kind='transformer', hidden=32, layers=1, out_dim=32),\n"
        "    'elevation': encoder('tabular', num_features=1, hidden=(16,), out_dim=32, mean=mu.tolist(), std=sd.tolist()),\n"
        "}\n"
        "model = build('early', encoders=encoders, tasks=TaskSpec('multiclass', num_outputs=len(classes)))\n"
        "trainer = L.Trainer(max_epochs=EPOCHS, logger=False, enable_checkpointing=False,\n"
        "                    enable_progress_bar=False, enable_model_summary=False)\n"
        "trainer.fit(FusionTask(model, lr=3e-3), datamodule)"
    ),
    new_markdown_cell(
        "## Robustness to cloud gaps and to a missing modality\n\nExtra clouds are simulated by "
        "hiding a further fraction of the observed dates of every test pixel; then each modality "
        "is removed entirely."
    ),
    new_code_cell(
        "import pandas as pd\n"
        "from sklearn.metrics import f1_score\n\n"
        "def evaluate(extra_cloud=0.0, keep=('ndvi', 'elevation'), seed=0):\n"
        "    rng = np.random.default_rng(seed)\n"
        "    test = splits['test']\n"
        "    s = series[test].copy()\n"
        "    s[rng.random(s.shape) < extra_cloud] = np.nan\n"
        "    ds = MultiModalDataset.from_arrays({'ndvi': s[:, :, None], 'elevation': elevation[test]}, label[test])\n"
        "    batch = ds.collate_fn([ds[i] for i in range(len(ds))]).with_modalities(keep)\n"
        "    model.eval()\n"
        "    with torch.no_grad():\n"
        "        pred = model(batch).argmax(1).numpy()\n"
        "    return f1_score(label[test], pred, average='macro'), (pred == label[test]).mean()\n\n"
        "rows = [dict(setting=f'{int(100 * c)}% extra cloud gaps', **dict(zip(['macro-F1', 'accuracy'], evaluate(c))))\n"
        "        for c in (0.0, 0.3, 0.6)]\n"
        "rows += [dict(setting=f'{m} only', **dict(zip(['macro-F1', 'accuracy'], evaluate(keep=(m,)))))\n"
        "         for m in ('ndvi', 'elevation')]\n"
        "robustness = pd.DataFrame(rows)\n"
        "robustness"
    ),
    new_code_cell(
        "assert len(robustness) == 5 and robustness['accuracy'].between(0, 1).all()\n"
        "print(f'CHECK geoscience ok: {len(splits[\"test\"])} test pixels, '\n"
        "      f'accuracy {robustness.accuracy.iloc[0]:.2f} -> {robustness.accuracy.iloc[2]:.2f} with 60% extra gaps')"
    ),
]

MERGING = [
    new_markdown_cell(
        "# Merging models trained at two sites (Lego merge)\n\n"
        "Two hospitals each hold one modality of their own patients and train a unimodal block "
        "on it; they share only the trained weights. `modfuse.merge` combines the blocks without "
        "data and without training, and the merged model predicts from either modality or both.\n\n"
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
        "from modfuse import LegoBlock, merge\n"
        "from modfuse.lego.workflow import fit_block\n\n"
        "def block(modality):\n"
        "    return LegoBlock({'name': 'tabular', 'num_features': 10, 'hidden': [32], 'out_dim': 32}, modality,\n"
        "                     latent_shape=(16, 32), depth=1, heads=4)\n\n"
        "block_a = fit_block(block('mean'), datamodule, max_epochs=EPOCHS, rows=site_a)   # at site A\n"
        "block_b = fit_block(block('worst'), datamodule, max_epochs=EPOCHS, rows=site_b)  # at site B\n"
        "merged = merge([block_a, block_b], method='harmonic')  # no data, no training"
    ),
    new_code_cell(
        "import time\n\n"
        "import pandas as pd\n"
        "from sklearn.metrics import roc_auc_score\n\n"
        "from modfuse.fusion.base import prediction_of\n\n"
        "def auroc(model, keep):\n"
        "    model.eval()\n"
        "    p, t = [], []\n"
        "    with torch.no_grad():\n"
        "        for batch in datamodule.test_dataloader():\n"
        "            p.append(torch.sigmoid(prediction_of(model(batch.with_modalities(keep)))[:, 0]))\n"
        "            t.append(batch.target)\n"
        "    return roc_auc_score(torch.cat(t).numpy(), torch.cat(p).numpy())\n\n"
        "start = time.perf_counter()\n"
        "merge([block_a, block_b])\n"
        "merge_ms = 1e3 * (time.perf_counter() - start)\n"
        "table = pd.DataFrame([\n"
        "    {'model': 'site A block (mean)', 'test AUROC': auroc(block_a, ['mean'])},\n"
        "    {'model': 'site B block (worst)', 'test AUROC': auroc(block_b, ['worst'])},\n"
        "    {'model': 'merged, mean only', 'test AUROC': auroc(merged, ['mean'])},\n"
        "    {'model': 'merged, worst only', 'test AUROC': auroc(merged, ['worst'])},\n"
        "    {'model': 'merged, both', 'test AUROC': auroc(merged, ['mean', 'worst'])},\n"
        "])\n"
        "print(f'merging took {merge_ms:.1f} ms')\n"
        "table"
    ),
    new_code_cell(
        "assert table['test AUROC'].between(0, 1).all() and merged.modalities == ['mean', 'worst']\n"
        "print(f\"CHECK merging ok: merged AUROC with both modalities {table['test AUROC'].iloc[-1]:.3f}\")"
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
