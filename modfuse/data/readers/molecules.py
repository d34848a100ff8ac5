"""Molecular graphs: SMILES strings to PyG graphs with RDKit atom and bond features, and
plain lists of PyG ``Data`` objects.

The feature widths are the constants `ATOM_FEATURES` and `BOND_FEATURES`, so a
graph encoder is configured from them (``in_dim=ATOM_FEATURES, edge_dim=BOND_FEATURES``).
Importing this module imports neither RDKit nor PyG; they load on first parse.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from modfuse.data.collate import CollateMode
from modfuse.data.readers import register
from modfuse.errors import ModfuseError, ReadError
from modfuse.utils.optional import require

if TYPE_CHECKING:
    from torch_geometric.data import Data

__all__ = [
    "ATOM_FEATURES",
    "ATOM_FEATURE_NAMES",
    "BOND_FEATURES",
    "BOND_FEATURE_NAMES",
    "GraphSource",
    "SmilesSource",
    "smiles_to_graph",
]

# One-hot vocabularies; each ends with an "other" slot so unusual atoms still encode.
_SYMBOLS = ("C", "N", "O", "S", "F", "Cl", "Br", "I", "P", "B", "Si", "Se", "H")
_DEGREES = (0, 1, 2, 3, 4, 5)
_CHARGES = (-1, 0, 1)
_NUM_HS = (0, 1, 2, 3, 4)
_HYBRID = ("SP", "SP2", "SP3", "SP3D", "SP3D2")
_CHIRAL = ("CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW")
_BOND_TYPES = ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC")
# RDKit's Z/E and CIS/TRANS encode the same geometry; merge them.
_STEREO = {"STEREONONE": 0, "STEREOANY": 1, "STEREOZ": 2, "STEREOCIS": 2, "STEREOE": 3, "STEREOTRANS": 3}


def _names(prefix: str, values: Sequence[Any], other: bool = True) -> list[str]:
    return [f"{prefix}={v}" for v in values] + ([f"{prefix}=other"] if other else [])


ATOM_FEATURE_NAMES: tuple[str, ...] = (
    *_names("symbol", _SYMBOLS),
    *_names("degree", _DEGREES),
    *_names("charge", _CHARGES),
    *_names("num_hs", _NUM_HS, other=False),
    *_names("hybridization", _HYBRID),
    *_names("chirality", _CHIRAL),
    "aromatic",
    "in_ring",
)
"""Name of each column of a graph's node features ``x``."""

BOND_FEATURE_NAMES: tuple[str, ...] = (
    *_names("bond", _BOND_TYPES, other=False),
    "stereo=none",
    "stereo=any",
    "stereo=Z",
    "stereo=E",
    "conjugated",
    "in_ring",
)
"""Name of each column of a graph's edge features ``edge_attr``."""

ATOM_FEATURES: int = len(ATOM_FEATURE_NAMES)
"""Width of the node features ``x`` of `smiles_to_graph()` graphs (42)."""
BOND_FEATURES: int = len(BOND_FEATURE_NAMES)
"""Width of the edge features ``edge_attr`` of `smiles_to_graph()` graphs (10)."""

# start column of each one-hot block in the atom features
_OFF_SYMBOL = 0
_OFF_DEGREE = _OFF_SYMBOL + len(_SYMBOLS) + 1
_OFF_CHARGE = _OFF_DEGREE + len(_DEGREES) + 1
_OFF_HS = _OFF_CHARGE + len(_CHARGES) + 1
_OFF_HYBRID = _OFF_HS + len(_NUM_HS)
_OFF_CHIRAL = _OFF_HYBRID + len(_HYBRID) + 1
_OFF_AROMATIC = _OFF_CHIRAL + len(_CHIRAL) + 1


def _slot(values: Sequence[Any], value: Any) -> int:
    """Index of ``value`` in ``values``, or the trailing "other" slot."""
    try:
        return values.index(value)
    except ValueError:
        return len(values)


def _atom_columns(atom: Any) -> list[int]:
    """Columns set to 1 for one RDKit atom."""
    cols = [
        _OFF_SYMBOL + _slot(_SYMBOLS, atom.GetSymbol()),
        _OFF_DEGREE + _slot(_DEGREES, atom.GetDegree()),
        _OFF_CHARGE + _slot(_CHARGES, atom.GetFormalCharge()),
        _OFF_HS + min(atom.GetTotalNumHs(), _NUM_HS[-1]),
        _OFF_HYBRID + _slot(_HYBRID, str(atom.GetHybridization())),
        _OFF_CHIRAL + _slot(_CHIRAL, str(atom.GetChiralTag())),
    ]
    if atom.GetIsAromatic():
        cols.append(_OFF_AROMATIC)
    if atom.IsInRing():
        cols.append(_OFF_AROMATIC + 1)
    return cols


def _bond_columns(bond: Any) -> list[int]:
    """Columns set to 1 for one RDKit bond."""
    n_types = len(_BOND_TYPES)
    cols = [_slot(_BOND_TYPES, str(bond.GetBondType())) % n_types, n_types + _STEREO.get(str(bond.GetStereo()), 1)]
    if bond.GetIsConjugated():
        cols.append(n_types + 4)
    if bond.IsInRing():
        cols.append(n_types + 5)
    return cols


def _parse(smiles: str, sample_id: Hashable | None, path: Any) -> Any:
    """RDKit mol from SMILES, or a ReadError saying why (syntax or chemistry problem)."""
    Chem = require("rdkit.Chem", extra="graph")
    from rdkit import rdBase

    rdBase.DisableLog("rdApp.*")  # the problem goes into our error, not onto stderr
    try:
        mol = Chem.MolFromSmiles(smiles, sanitize=False)
        if mol is None:
            raise ReadError(
                f"invalid SMILES {smiles!r}: RDKit cannot parse it (syntax error or unclosed ring)",
                path=path,
                sample_id=sample_id,
            )
        problems = Chem.DetectChemistryProblems(mol)
        if problems:
            detail = "; ".join(p.Message() for p in problems)
            raise ReadError(f"invalid SMILES {smiles!r}: {detail}", path=path, sample_id=sample_id)
        Chem.SanitizeMol(mol)
    finally:
        rdBase.EnableLog("rdApp.*")
    if mol.GetNumAtoms() == 0:
        raise ReadError(f"SMILES {smiles!r} has no atoms", path=path, sample_id=sample_id)
    return mol


def smiles_to_graph(
    smiles: str, *, sample_id: Hashable | None = None, add_hydrogens: bool = False, path: Any = None
) -> Data:
    """Parse one SMILES string into a PyG graph.

    Args:
        smiles: the SMILES string.
        sample_id: named in the error if the string is invalid.
        add_hydrogens: make hydrogens explicit atoms (default: implicit, counted in ``num_hs``).
        path: the file the string came from, named in errors.

    Returns:
        ``Data`` with ``x`` (n_atoms, ATOM_FEATURES) float32 one-hot atom features,
        ``edge_index`` (2, 2 * n_bonds) long (both directions of each bond),
        ``edge_attr`` (2 * n_bonds, BOND_FEATURES) float32, and ``smiles``.

    Raises:
        ReadError: the string is not valid SMILES (syntax or valence problem) or has no atoms.
    """
    geometric = require("torch_geometric.data", extra="graph")
    mol = _parse(smiles, sample_id, path)
    if add_hydrogens:
        mol = require("rdkit.Chem", extra="graph").AddHs(mol)
    x = np.zeros((mol.GetNumAtoms(), ATOM_FEATURES), dtype=np.float32)
    for atom in mol.GetAtoms():
        x[atom.GetIdx(), _atom_columns(atom)] = 1.0
    n_bonds = mol.GetNumBonds()
    edge_index = np.zeros((2, 2 * n_bonds), dtype=np.int64)
    edge_attr = np.zeros((2 * n_bonds, BOND_FEATURES), dtype=np.float32)
    for k, bond in enumerate(mol.GetBonds()):
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        edge_index[:, 2 * k] = (i, j)
        edge_index[:, 2 * k + 1] = (j, i)
        edge_attr[2 * k, _bond_columns(bond)] = 1.0
        edge_attr[2 * k + 1] = edge_attr[2 * k]
    return geometric.Data(
        x=torch.from_numpy(x),
        edge_index=torch.from_numpy(edge_index),
        edge_attr=torch.from_numpy(edge_attr),
        smiles=smiles,
    )


def _id_map(values: Any, ids: Sequence[Hashable] | None, what: str) -> dict[Hashable, Any]:
    """``{id: value}`` from a mapping, a Series (index = ids) or a sequence (+ optional ids)."""
    if isinstance(values, pd.Series):
        if ids is not None:
            raise ModfuseError(f"{what}: pass ids either as the Series index or as ids=, not both")
        values = values.to_dict()
    if isinstance(values, Mapping):
        return dict(values)
    values = list(values)
    ids = list(range(len(values))) if ids is None else list(ids)
    if len(ids) != len(values):
        raise ModfuseError(f"{what}: {len(values)} values but {len(ids)} ids")
    out = dict(zip(ids, values))
    if len(out) != len(values):
        raise ModfuseError(f"{what}: sample ids must be unique")
    return out


def _blank(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and np.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


@register("smiles")
class SmilesSource:
    """Molecules given as SMILES strings, read as PyG graphs (see `smiles_to_graph()`).

    A ``None``, NaN or empty string is a missing modality for that sample; an invalid SMILES
    raises `ReadError` naming the sample and the problem (the dataset's ``on_error``
    decides whether that stops the run or marks the molecule missing).

    Args:
        smiles: SMILES per sample: a sequence (with ``ids``), a mapping ``{id: smiles}``, or a
            pandas Series indexed by id.
        ids: sample ids for a sequence (default ``0..N-1``).
        add_hydrogens: explicit hydrogen atoms.
        path: the file the strings came from (named in errors); set by `from_csv()`.
        collate: collate mode (default ``"auto"``: graphs become a PyG ``Batch``).

    Example:
        >>> src = SmilesSource(["CCO", "c1ccccc1"], ids=["ethanol", "benzene"])
        >>> src.load("benzene").x.shape
        torch.Size([6, 42])
    """

    def __init__(
        self,
        smiles: Sequence[str | None] | Mapping[Hashable, str | None] | pd.Series,
        ids: Sequence[Hashable] | None = None,
        *,
        add_hydrogens: bool = False,
        path: str | Path | None = None,
        collate: CollateMode = "auto",
    ) -> None:
        self._smiles = _id_map(smiles, ids, "SmilesSource")
        self.ids = list(self._smiles)
        self.add_hydrogens = add_hydrogens
        self.path = path
        self.collate = collate

    @classmethod
    def from_csv(
        cls, path: str | Path, smiles_column: str = "smiles", id_column: str | None = None, **kwargs: Any
    ) -> SmilesSource:
        """Read SMILES from a CSV (or Parquet, by suffix) column.

        Args:
            path: the table file.
            smiles_column: the column holding SMILES.
            id_column: the column holding sample ids (default: the row number).
            **kwargs: passed to the constructor.
        """
        path = Path(path)
        try:
            frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise ReadError(f"cannot read the SMILES table: {exc}", path=path) from exc
        for col in (smiles_column, id_column):
            if col is not None and col not in frame.columns:
                raise ReadError(f"expected a column {col!r}, found columns {list(frame.columns)}", path=path)
        ids = frame[id_column].tolist() if id_column else None
        return cls(frame[smiles_column].tolist(), ids, path=path, **kwargs)

    def smiles_of(self, sample_id: Hashable) -> str | None:
        """The SMILES string of ``sample_id`` (stripped; None when missing)."""
        try:
            value = self._smiles[sample_id]
        except KeyError:
            raise ModfuseError(f"unknown sample id {sample_id!r}; this source has {len(self.ids)} ids") from None
        return None if _blank(value) else str(value).strip()

    def load(self, sample_id: Hashable) -> Data | None:
        """The molecule graph of ``sample_id``, or None when its SMILES is missing."""
        smiles = self.smiles_of(sample_id)
        if smiles is None:
            return None
        return smiles_to_graph(smiles, sample_id=sample_id, add_hydrogens=self.add_hydrogens, path=self.path)

    def __len__(self) -> int:
        return len(self.ids)


@register("graphs")
class GraphSource:
    """Ready-made PyG graphs (``torch_geometric.data.Data``), one per sample or ``None``.

    Each graph is checked on load: ``edge_index`` must be a (2, E) integer tensor with node
    indices in ``[0, num_nodes)`` and node features (if any) must be finite.

    Args:
        graphs: a sequence of ``Data`` (with ``ids``), or a mapping ``{id: Data}``.
        ids: sample ids for a sequence (default ``0..N-1``).
        collate: collate mode (default ``"auto"``: a PyG ``Batch``).
    """

    def __init__(
        self,
        graphs: Sequence[Any] | Mapping[Hashable, Any],
        ids: Sequence[Hashable] | None = None,
        *,
        collate: CollateMode = "auto",
    ) -> None:
        self._graphs = _id_map(graphs, ids, "GraphSource")
        self.ids = list(self._graphs)
        self.collate = collate

    def load(self, sample_id: Hashable) -> Data | None:
        """The graph of ``sample_id`` (None when missing); ReadError for a malformed graph."""
        try:
            graph = self._graphs[sample_id]
        except KeyError:
            raise ModfuseError(f"unknown sample id {sample_id!r}; this source has {len(self.ids)} ids") from None
        if graph is None:
            return None
        _check_graph(graph, sample_id)
        return graph

    def __len__(self) -> int:
        return len(self.ids)


def _check_graph(graph: Any, sample_id: Hashable) -> None:
    if not (hasattr(graph, "edge_index") and hasattr(graph, "num_nodes")):
        raise ReadError(f"expected a torch_geometric Data, found {type(graph).__name__}", sample_id=sample_id)
    ei = graph.edge_index
    if ei is None or ei.dim() != 2 or ei.shape[0] != 2 or ei.dtype not in (torch.long, torch.int):
        found = None if ei is None else f"{tuple(ei.shape)} {ei.dtype}"
        raise ReadError(f"edge_index must be a (2, E) integer tensor, found {found}", sample_id=sample_id)
    n = graph.num_nodes
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
        raise ReadError(
            f"edge_index refers to node {int(ei.max())} (or a negative one) but the graph has {n} nodes",
            sample_id=sample_id,
        )
    x = getattr(graph, "x", None)
    if isinstance(x, torch.Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ReadError("node features x contain NaN or inf", sample_id=sample_id)
