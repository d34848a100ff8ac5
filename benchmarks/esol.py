"""ESOL (Delaney 2004) aqueous solubility: molecular graph + descriptor table -> log solubility.

Two modalities per molecule:

- ``graph``: the molecule from its SMILES, parsed by modfuse's SMILES reader
  (``modfuse.data.readers.smiles_to_graph``: one-hot atom and bond features), encoded by
  modfuse's ``graph`` encoder when it is registered, else by the small GINE network below.
- ``table``: the six descriptors shipped in the CSV (minimum degree, molecular weight,
  H-bond donors, rings, rotatable bonds, polar surface area) plus RDKit's Crippen logP and
  molar refractivity, computed from the SMILES. The CSV column "ESOL predicted log
  solubility" is a model's output and is never used.

Splits: random 80/10/10 repeated over seeds, and the deterministic Murcko scaffold split.
Targets are standardised with the training statistics; RMSE is reported in log(mol/L).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from benchmarks import common

CSV = "esol/delaney-processed.csv"
TARGET = "measured log solubility in mols per litre"
CSV_DESCRIPTORS = [
    "Minimum Degree",
    "Molecular Weight",
    "Number of H-Bond Donors",
    "Number of Rings",
    "Number of Rotatable Bonds",
    "Polar Surface Area",
]
PUBLISHED = {"MPNN": 0.58, "AttentiveFP": 0.61, "D-MPNN": 0.69}


@dataclass
class Settings:
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    epochs: int = 120
    batch_size: int = 32
    lr: float = 2e-3
    hidden: int = 128
    scaffold_seeds: tuple[int, ...] = (0, 1, 2)


QUICK = Settings(seeds=(0,), epochs=15, hidden=64, scaffold_seeds=(0,))


# ---------------------------------------------------------------------------- data


def load() -> tuple[list[Any], np.ndarray, np.ndarray, list[str], list[str]]:
    """(graphs, descriptor table, target, smiles, descriptor names) for the 1128 molecules."""
    from rdkit import Chem
    from rdkit.Chem import Crippen

    from modfuse.data.readers import smiles_to_graph

    frame = pd.read_csv(common.DATA / CSV)
    smiles = [s.strip() for s in frame["smiles"]]
    graphs = [smiles_to_graph(s, sample_id=cid) for s, cid in zip(smiles, frame["Compound ID"])]
    mols = [Chem.MolFromSmiles(s) for s in smiles]
    extra = np.array([[Crippen.MolLogP(m), Crippen.MolMR(m)] for m in mols], dtype=np.float32)
    table = np.concatenate([frame[CSV_DESCRIPTORS].to_numpy(np.float32), extra], axis=1)
    names = [*CSV_DESCRIPTORS, "Crippen logP (RDKit)", "Crippen molar refractivity (RDKit)"]
    return graphs, table, frame[TARGET].to_numpy(np.float32), smiles, names


class GINE(nn.Module):
    """Fallback graph encoder (used only when modfuse's ``graph`` encoder is not registered):
    GINE convolutions with bond features, sum + mean readout."""

    def __init__(self, in_channels: int, edge_dim: int, hidden: int = 128, layers: int = 3, out_dim: int = 128):
        super().__init__()
        from torch_geometric.nn import GINEConv

        self.embed = nn.Linear(in_channels, hidden)
        self.convs = nn.ModuleList(
            GINEConv(nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden)), edge_dim=edge_dim)
            for _ in range(layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.out = nn.Linear(2 * hidden, out_dim)

    def forward(self, batch: Any) -> torch.Tensor:
        from torch_geometric.nn import global_add_pool, global_mean_pool

        h = self.embed(batch.x)
        for conv, norm in zip(self.convs, self.norms):
            h = h + torch.nn.functional.gelu(norm(conv(h, batch.edge_index, batch.edge_attr)))
        pooled = torch.cat([global_add_pool(h, batch.batch) / 10.0, global_mean_pool(h, batch.batch)], dim=1)
        return self.out(pooled)


def esol_dataset(graphs: list[Any], table: np.ndarray, y: np.ndarray) -> Any:
    """A MultiModalDataset joining the graph and table sources on the row number."""
    from modfuse import MultiModalDataset
    from modfuse.data import ArraySource
    from modfuse.data.readers import GraphSource

    ids = list(range(len(y)))
    return MultiModalDataset({"graph": GraphSource(graphs, ids), "table": ArraySource(table, ids)}, y, ids=ids)


def graph_encoder_factory(hidden: int) -> tuple[Callable[[], nn.Module], str]:
    """A factory of fresh graph encoders, and which implementation it is."""
    from modfuse.data.readers import ATOM_FEATURES, BOND_FEATURES
    from modfuse.encoders import available, build, wrap

    if "graph" in available():
        return (
            lambda: build(
                "graph", in_dim=ATOM_FEATURES, edge_dim=BOND_FEATURES, hidden=hidden, layers=3, out_dim=hidden
            ),
            "modfuse graph encoder",
        )
    return (
        lambda: wrap(GINE(ATOM_FEATURES, BOND_FEATURES, hidden=hidden, out_dim=hidden), out_dim=hidden),
        "GINE defined in benchmarks/esol.py (modfuse 'graph' encoder not registered)",
    )


def splits_for(smiles: list[str], n: int, kind: str, seed: int) -> dict[str, np.ndarray]:
    from modfuse.data.datamodule import split_indices

    if kind == "random":
        return split_indices(n, "random", val_fraction=0.1, test_fraction=0.1, seed=seed)
    from modfuse.datasets.splits import scaffold_split

    return scaffold_split(smiles, val_fraction=0.1, test_fraction=0.1, seed=None)[0]


# ---------------------------------------------------------------------------- runs


def models_to_run() -> list[tuple[str, str, dict[str, Any]]]:
    """(row label, strategy, extra build kwargs): every registered strategy + one unimodal per modality."""
    rows: list[tuple[str, str, dict[str, Any]]] = []
    for s in common.strategies(exclude=("unimodal",)):
        rows.append((s, s, {}))
    for m in ("graph", "table"):
        rows.append((f"unimodal: {m}", "unimodal", {"modality": m}))
    return rows


def run(settings: Settings, command: str, log: Callable[[str], None] = print) -> pd.DataFrame:
    from modfuse import MultiModalDataModule
    from modfuse.encoders import build as build_encoder

    common.quiet()
    graphs, table, y, smiles, names = load()
    n = len(y)
    make_graph, graph_impl = graph_encoder_factory(settings.hidden)
    rows = []
    runs = [("random", s) for s in settings.seeds] + [("scaffold", s) for s in settings.scaffold_seeds]
    for split_kind, seed in runs:
        idx = splits_for(smiles, n, split_kind, seed)
        tr = idx["train"]
        mu, sd = float(y[tr].mean()), float(y[tr].std())
        y_std = (y - mu) / sd
        t_mean, t_std = table[tr].mean(0), table[tr].std(0) + 1e-6
        ds = esol_dataset(graphs, table, y_std)
        for label, strategy, kwargs in models_to_run():
            common.seed_all(seed)
            dm = MultiModalDataModule(ds, splits=idx, batch_size=settings.batch_size, seed=seed)

            def encoders(t_mean: np.ndarray = t_mean, t_std: np.ndarray = t_std) -> dict[str, nn.Module]:
                return {
                    "graph": make_graph(),
                    "table": build_encoder(
                        "tabular",
                        num_features=table.shape[1],
                        hidden=(settings.hidden,),
                        out_dim=settings.hidden,
                        mean=t_mean.tolist(),
                        std=t_std.tolist(),
                    ),
                }

            try:
                model = common.build_strategy(strategy, encoders, "regression", **kwargs)
                result = common.fit(model, dm, epochs=settings.epochs, lr=settings.lr)
            except Exception as exc:  # a strategy that fails is reported, not hidden
                log(f"  {split_kind} seed {seed} {label}: FAILED {type(exc).__name__}: {exc}")
                rows.append(dict(split=split_kind, seed=seed, model=label, rmse=np.nan, error=str(exc)[:200]))
                continue
            pred = result.predictions["test"] * sd + mu
            rmse = float(np.sqrt(np.mean((pred - y[idx["test"]]) ** 2)))
            mae = float(np.mean(np.abs(pred - y[idx["test"]])))
            rows.append(
                dict(
                    split=split_kind,
                    seed=seed,
                    model=label,
                    rmse=rmse,
                    mae=mae,
                    n_test=len(idx["test"]),
                    best_epoch=result.best_epoch,
                    train_seconds=round(result.seconds, 1),
                    graph_encoder=graph_impl,
                    error="",
                )
            )
            log(f"  {split_kind} seed {seed} {label}: RMSE {rmse:.3f} ({result.seconds:.0f}s)")
            write(pd.DataFrame(rows), settings, command, graph_impl, names)  # tables stay current if stopped
    raw = pd.DataFrame(rows)
    write(raw, settings, command, graph_impl, names)
    return raw


def write(raw: pd.DataFrame, settings: Settings, command: str, graph_impl: str, names: list[str]) -> None:
    ok = raw[raw["rmse"].notna()]
    table_rows = []
    for model, grp in ok.groupby("model", sort=False):
        rnd = grp[grp["split"] == "random"]["rmse"]
        scf = grp[grp["split"] == "scaffold"]["rmse"]
        table_rows.append(
            {
                "model": model,
                f"random split RMSE ({len(rnd)} seeds)": common.mean_sd(rnd) if len(rnd) else "",
                f"scaffold split RMSE ({len(scf)} seeds)": common.mean_sd(scf) if len(scf) else "",
            }
        )
    for name, value in PUBLISHED.items():
        table_rows.append(
            {
                "model": f"published {name} (MoleculeNet/literature, random split)",
                f"random split RMSE ({len(settings.seeds)} seeds)": f"{value:.2f}",
            }
        )
    frame = pd.DataFrame(table_rows).fillna("")
    failed = raw[raw["rmse"].isna()]
    notes = [
        f"task: log solubility (mol/L) of {1128} molecules; graph from SMILES + descriptor table ({', '.join(names)})",
        "random split: 80/10/10, a new split per seed; scaffold split: deterministic Murcko scaffold split "
        "(largest scaffold sets to train), repeated over training seeds",
        f"training: FusionTask, AdamW lr {settings.lr}, one-cycle cosine schedule, {settings.epochs} epochs, "
        f"batch {settings.batch_size}, weights of the best validation-RMSE epoch; targets standardised on train",
        f"graph encoder: {graph_impl}",
        "published rows: the reference values given in the benchmark issue (MPNN, AttentiveFP, D-MPNN), obtained "
        "by their authors on their own random splits; quoted as reference points, not rerun here",
    ]
    if len(failed):
        notes.append(
            "failed runs: " + "; ".join(f"{r.model} ({r.split} {r.seed}): {r.error}" for r in failed.itertuples())
        )
    common.write_results(
        "esol",
        "ESOL solubility (RMSE, log mol/L; lower is better)",
        {"": frame},
        raw,
        command=command,
        seeds=f"random {list(settings.seeds)}, scaffold {list(settings.scaffold_seeds)}",
        notes=notes,
    )
