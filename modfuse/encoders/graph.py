"""Graph encoder: GIN (node features) or GINE (node + edge features) with global pooling."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from modfuse.encoders.base import Encoder, check_finite
from modfuse.encoders.registry import register
from modfuse.errors import ModfuseError
from modfuse.utils.optional import require

__all__ = ["GraphEncoder"]

Pool = Literal["add", "mean", "max"]


@register("graph")
class GraphEncoder(Encoder):
    """Graph isomorphism network over a PyTorch Geometric ``Batch`` (one graph per row).

    Each layer is a ``GINConv`` (``edge_dim=None``) or ``GINEConv`` (edge features added to
    the messages) with a 2-layer MLP, followed by a per-node LayerNorm (no BatchNorm, so a
    graph's features never depend on the other graphs of the batch) and a residual. As in the
    GIN paper, each layer's node states are pooled per graph and the pooled vectors of all
    layers are concatenated, then projected to ``out_dim``. A graph with no nodes pools to 0.

    Args:
        in_dim: node feature width (e.g. the RDKit atom feature width of the molecule reader).
        edge_dim: edge feature width, or None for GIN without edge features.
        hidden: node state width.
        layers: number of message-passing layers.
        out_dim: output width.
        pool: global pooling: ``"add"`` (GIN's choice, counts substructures), ``"mean"``, ``"max"``.
        dropout: dropout on node states.

    Shapes:
        input Batch with ``x`` (N_nodes, in_dim), ``edge_index`` (2, N_edges), ``edge_attr``
        (N_edges, edge_dim) when ``edge_dim`` is set, ``batch`` (N_nodes,) -> (num_graphs, out_dim).
    """

    def __init__(
        self,
        in_dim: int,
        edge_dim: int | None = None,
        hidden: int = 128,
        layers: int = 4,
        out_dim: int = 128,
        pool: Pool = "add",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        pyg_nn = require("torch_geometric.nn", extra="graph")
        if pool not in ("add", "mean", "max"):
            raise ModfuseError(f"pool: expected 'add', 'mean' or 'max', found {pool!r}")
        if layers < 1:
            raise ModfuseError(f"layers: expected at least 1, found {layers}")
        self.in_dim, self.edge_dim, self.out_dim = in_dim, edge_dim, out_dim
        self._pool = getattr(pyg_nn, f"global_{pool}_pool")
        self.embed = nn.Linear(in_dim, hidden)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for _ in range(layers):
            mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
            conv = (
                pyg_nn.GINConv(mlp, train_eps=True)
                if edge_dim is None
                else pyg_nn.GINEConv(mlp, train_eps=True, edge_dim=edge_dim)
            )
            self.convs.append(conv)
            self.norms.append(nn.LayerNorm(hidden))
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden * (layers + 1), out_dim)

    def _check(self, graph: Any) -> tuple[Tensor, Tensor, Tensor | None, Tensor, int]:
        x = getattr(graph, "x", None)
        if not isinstance(x, Tensor) or x.dim() != 2:
            found = "no node features" if x is None else f"shape {tuple(getattr(x, 'shape', ()))}"
            raise ModfuseError(f"graph node features x: expected (num_nodes, {self.in_dim}), found {found}")
        if x.shape[1] != self.in_dim:
            raise ModfuseError(f"graph node feature width: expected {self.in_dim}, found {x.shape[1]}")
        x = x.float()
        check_finite(x, "graph node features")
        edge_index = getattr(graph, "edge_index", None)
        if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
            found = "none" if edge_index is None else f"shape {tuple(getattr(edge_index, 'shape', ()))}"
            raise ModfuseError(f"graph edge_index: expected a (2, num_edges) tensor, found {found}")
        edge_attr = getattr(graph, "edge_attr", None)
        if self.edge_dim is not None:
            if edge_attr is None:
                raise ModfuseError(f"graph edge features: expected edge_attr (num_edges, {self.edge_dim}), found none")
            edge_attr = edge_attr.float()
            if edge_attr.dim() == 1:
                edge_attr = edge_attr[:, None]
            if edge_attr.shape[1] != self.edge_dim:
                raise ModfuseError(f"graph edge feature width: expected {self.edge_dim}, found {edge_attr.shape[1]}")
            check_finite(edge_attr, "graph edge features")
        batch = getattr(graph, "batch", None)
        if batch is None:  # a single Data object is one graph
            batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        num_graphs = int(getattr(graph, "num_graphs", 1))
        return x, edge_index, edge_attr, batch, num_graphs

    def forward(self, graph: Any) -> Tensor:
        """PyG ``Batch`` of n graphs -> (n, out_dim)."""
        x, edge_index, edge_attr, batch, n = self._check(graph)
        h = self.embed(x)
        pooled = [self._pool(h, batch, size=n)]
        for conv, norm in zip(self.convs, self.norms):
            msg = conv(h, edge_index) if self.edge_dim is None else conv(h, edge_index, edge_attr)
            h = h + self.drop(torch.relu(norm(msg)))
            pooled.append(self._pool(h, batch, size=n))
        return self.proj(torch.cat(pooled, dim=1))
