"""SMILES and PyG graph readers: real ESOL molecules, invalid SMILES under both policies."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

pytest.importorskip("rdkit")
pytest.importorskip("torch_geometric")

from modfuse.data import MultiModalDataset
from modfuse.data.readers import (
    ATOM_FEATURES,
    BOND_FEATURES,
    GraphSource,
    SmilesSource,
    build,
    smiles_to_graph,
)
from modfuse.data.readers.molecules import ATOM_FEATURE_NAMES, BOND_FEATURE_NAMES
from modfuse.errors import ReadError


def test_all_esol_smiles_parse(shared_data):
    path = shared_data / "esol" / "delaney-processed.csv"
    src = SmilesSource.from_csv(path, smiles_column="smiles", id_column="Compound ID")
    assert len(src) == 1128
    graphs = [src.load(i) for i in src.ids]
    assert all(g is not None and g.x.shape[1] == ATOM_FEATURES for g in graphs)
    assert all(g.edge_attr.shape == (g.edge_index.shape[1], BOND_FEATURES) for g in graphs)
    # every atom has exactly one symbol, degree, charge, H-count, hybridisation and chirality slot
    x = torch.cat([g.x for g in graphs])
    assert torch.equal(x[:, : ATOM_FEATURES - 2].sum(1), torch.full((x.shape[0],), 6.0))


def test_benzene_features_and_symmetric_edges():
    g = smiles_to_graph("c1ccccc1")
    assert g.x.shape == (6, ATOM_FEATURES) and g.edge_index.shape == (2, 12)
    names = dict(zip(ATOM_FEATURE_NAMES, g.x[0].tolist()))
    assert names["symbol=C"] == 1 and names["aromatic"] == 1 and names["num_hs=1"] == 1
    bond = dict(zip(BOND_FEATURE_NAMES, g.edge_attr[0].tolist()))
    assert bond["bond=AROMATIC"] == 1 and bond["in_ring"] == 1
    # each bond appears in both directions with the same features
    pairs = {tuple(e) for e in g.edge_index.t().tolist()}
    assert all((j, i) in pairs for i, j in pairs)
    assert torch.equal(g.edge_attr[0::2], g.edge_attr[1::2])


def test_single_atom_has_no_edges():
    g = smiles_to_graph("[Na+]")
    assert g.x.shape == (1, ATOM_FEATURES) and g.edge_index.shape == (2, 0) and g.edge_attr.shape == (0, BOND_FEATURES)


@pytest.mark.parametrize(
    ("smiles", "problem"), [("C1CC", "cannot parse"), ("C(C)(C)(C)(C)C", "valence"), ("Xx", "cannot parse")]
)
def test_invalid_smiles_error_names_sample_and_problem(smiles, problem):
    src = SmilesSource({"bad": smiles})
    with pytest.raises(ReadError, match=problem) as info:
        src.load("bad")
    assert info.value.sample_id == "bad" and smiles in str(info.value)


def test_invalid_smiles_policy_through_dataset(tmp_path):
    csv = tmp_path / "mols.csv"
    pd.DataFrame({"id": ["a", "b", "c", "d"], "smiles": ["CCO", "C1CC", None, "CC(=O)O"]}).to_csv(csv, index=False)
    src = SmilesSource.from_csv(csv, id_column="id")
    with pytest.raises(ReadError, match=r"'mol'.*'b'.*C1CC") as info:
        MultiModalDataset({"mol": src})[1]
    assert info.value.path == csv

    ds = MultiModalDataset({"mol": src}, on_error="missing")
    batch = ds.collate_fn([ds[i] for i in range(4)])
    assert batch.present["mol"].tolist() == [True, False, False, True]
    assert batch.inputs["mol"].num_graphs == 2
    report = ds.read_error_report()
    assert report["id"].tolist() == ["b"] and report["modality"].tolist() == ["mol"]  # None is missing, not an error
    assert [e[:2] for e in batch.errors] == [("b", "mol")]


def test_graph_source_checks_graphs():
    from torch_geometric.data import Data

    good = Data(x=torch.ones(3, 2), edge_index=torch.tensor([[0, 1], [1, 2]]))
    bad = Data(x=torch.ones(2, 2), edge_index=torch.tensor([[0, 5], [1, 0]]))
    src = build("graphs", [good, None, bad], ids=["g", "none", "bad"])
    assert src.load("g") is good and src.load("none") is None
    with pytest.raises(ReadError, match=r"node 5.*2 nodes"):
        src.load("bad")
    assert isinstance(src, GraphSource)
