"""The batch that carries any per-sample pattern of missing modalities."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from modfuse.errors import ModfuseError

__all__ = ["ModalityBatch", "PaddedTensor", "encode_present", "move_to", "scatter_rows", "take_rows"]


@dataclass
class PaddedTensor:
    """Variable-length rows padded to a common length along ``dim``.

    Attributes:
        values: (n, ...) rows zero-padded along ``dim`` (e.g. (n, leads, L_max) for signals).
        mask: (n, L_max) bool, True where an element is real data.
        dim: the padded dimension of ``values`` (negative counts from the end).
    """

    values: Tensor
    mask: Tensor
    dim: int = -1

    def to(self, *args: Any, **kwargs: Any) -> PaddedTensor:
        return PaddedTensor(
            self.values.to(*args, **kwargs), self.mask.to(kwargs.get("device", args[0] if args else None)), self.dim
        )

    def pin_memory(self) -> PaddedTensor:
        return PaddedTensor(self.values.pin_memory(), self.mask.pin_memory(), self.dim)

    def __len__(self) -> int:
        return self.values.shape[0]


def take_rows(x: Any, index: Tensor) -> Any:
    """Select rows ``index`` (LongTensor) of a collated modality input of any supported type:
    Tensor, PaddedTensor, dict of those, list, or a PyG ``Batch``."""
    if isinstance(x, Tensor):
        return x.index_select(0, index.to(x.device))
    if isinstance(x, PaddedTensor):
        keep = x.mask.index_select(0, index.to(x.mask.device))
        return PaddedTensor(x.values.index_select(0, index.to(x.values.device)), keep, x.dim)
    if isinstance(x, Mapping):
        return {k: take_rows(v, index) for k, v in x.items()}
    if isinstance(x, list):
        return [x[i] for i in index.tolist()]
    if hasattr(x, "index_select") and hasattr(x, "to_data_list"):  # torch_geometric Batch
        from torch_geometric.data import Batch

        return Batch.from_data_list(x.index_select(index.cpu()))
    raise TypeError(f"cannot select rows of a {type(x).__name__}")


def move_to(x: Any, device: torch.device | str, non_blocking: bool = False) -> Any:
    """Move a tensor or a nested container of tensors (or a PyG Batch) to ``device``."""
    if isinstance(x, Tensor):
        return x.to(device, non_blocking=non_blocking)
    if isinstance(x, PaddedTensor):
        return PaddedTensor(
            x.values.to(device, non_blocking=non_blocking), x.mask.to(device, non_blocking=non_blocking), x.dim
        )
    if isinstance(x, Mapping):
        return {k: move_to(v, device, non_blocking) for k, v in x.items()}
    if isinstance(x, list):
        return [move_to(v, device, non_blocking) for v in x]
    if hasattr(x, "to") and callable(x.to):
        return x.to(device)
    return x


def _pin(x: Any) -> Any:
    if isinstance(x, (Tensor, PaddedTensor)):
        return x.pin_memory()
    if isinstance(x, Mapping):
        return {k: _pin(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_pin(v) for v in x]
    if hasattr(x, "pin_memory"):
        return x.pin_memory()
    return x


def _n_rows(x: Any) -> int:
    if isinstance(x, Tensor):
        return x.shape[0]
    if isinstance(x, Mapping):
        return _n_rows(next(iter(x.values())))
    if hasattr(x, "num_graphs"):
        return int(x.num_graphs)
    return len(x)


@dataclass
class ModalityBatch:
    """A batch of B samples where each sample may lack any subset of modalities.

    Attributes:
        inputs: modality -> collated input holding ONLY the present rows, in batch order
            (e.g. a Tensor of shape (n_present, ...), a `PaddedTensor`, or a PyG ``Batch``).
            A modality that no sample of the batch has has no key here.
        present: modality -> BoolTensor of shape (B,), True where the sample has the modality.
        target: Tensor with leading dimension B, or dict task -> Tensor for multi-task, or None.
        ids: the B sample ids.
        errors: (sample id, modality, message) for each modality marked missing because its
            input was bad (datasets with ``on_error="missing"``); training logs them.
    """

    inputs: dict[str, Any]
    present: dict[str, Tensor]
    target: Tensor | dict[str, Tensor] | None = None
    ids: list[Any] = field(default_factory=list)
    errors: list[tuple[Any, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for m, mask in self.present.items():
            if mask.dtype != torch.bool or mask.dim() != 1:
                raise ModfuseError(
                    f"present mask must be a 1-D bool tensor, found {mask.dtype} of shape {tuple(mask.shape)}",
                    modality=m,
                )
            if m in self.inputs and _n_rows(self.inputs[m]) != int(mask.sum()):
                raise ModfuseError(
                    f"inputs hold {_n_rows(self.inputs[m])} rows but present marks {int(mask.sum())} samples",
                    modality=m,
                )
        if not self.ids:
            self.ids = list(range(self.batch_size))

    # ------------------------------------------------------------------ shape facts
    @property
    def batch_size(self) -> int:
        """B, the number of samples (present or not)."""
        if self.present:
            return next(iter(self.present.values())).shape[0]
        return len(self.ids)

    def __len__(self) -> int:
        return self.batch_size

    @property
    def modalities(self) -> list[str]:
        """The modality names this batch knows (present for at least zero samples)."""
        return list(self.present)

    @property
    def device(self) -> torch.device:
        return next(iter(self.present.values())).device

    def index(self, modality: str) -> Tensor:
        """LongTensor (n_present,) of the batch positions of the rows in ``inputs[modality]``."""
        return self.present[modality].nonzero(as_tuple=True)[0]

    def has(self, modality: str) -> bool:
        """True if at least one sample has ``modality``."""
        return modality in self.present and bool(self.present[modality].any())

    def ids_of(self, modality: str) -> list[Any]:
        """Sample ids of the present rows of ``modality``, in row order."""
        return [self.ids[i] for i in self.index(modality).tolist()]

    # ------------------------------------------------------------------ transforms
    def to(self, device: torch.device | str, non_blocking: bool = False) -> ModalityBatch:
        """Move every tensor (inputs, masks, targets) to ``device`` as one object (the batch
        itself when it is already there)."""
        if self._on(torch.device(device)):
            return self
        return ModalityBatch(
            inputs={m: move_to(x, device, non_blocking) for m, x in self.inputs.items()},
            present={m: p.to(device, non_blocking=non_blocking) for m, p in self.present.items()},
            target=move_to(self.target, device, non_blocking) if self.target is not None else None,
            ids=list(self.ids),
            errors=list(self.errors),
        )

    def _on(self, device: torch.device) -> bool:
        """True when every tensor of the batch is on ``device`` (nothing to move)."""
        if device.type == "cuda" and device.index is None:
            return False  # "cuda" means the current device: let ``to`` resolve it

        def on(x: Any) -> bool:
            if isinstance(x, Tensor):
                return x.device == device
            if isinstance(x, PaddedTensor):
                return x.values.device == device and x.mask.device == device
            if isinstance(x, Mapping):
                return all(on(v) for v in x.values())
            if isinstance(x, list):
                return all(on(v) for v in x if isinstance(v, (Tensor, PaddedTensor, Mapping, list)))
            if hasattr(x, "stores"):  # a PyG Data/Batch
                return all(t.device == device for st in x.stores for t in st.values() if isinstance(t, Tensor))
            if hasattr(x, "to") and callable(x.to):
                return False  # an object we cannot inspect: let ``move_to`` handle it
            return True

        return (
            all(p.device == device for p in self.present.values())
            and all(on(x) for x in self.inputs.values())
            and (self.target is None or on(self.target))
        )

    def pin_memory(self) -> ModalityBatch:
        """Pinned-memory copy (DataLoader calls this when ``pin_memory=True``)."""
        return ModalityBatch(
            inputs={m: _pin(x) for m, x in self.inputs.items()},
            present={m: p.pin_memory() for m, p in self.present.items()},
            target=_pin(self.target) if self.target is not None else None,
            ids=list(self.ids),
            errors=list(self.errors),
        )

    def mask_modality(self, modality: str, keep: Tensor) -> ModalityBatch:
        """Mark ``modality`` absent wherever ``keep`` (BoolTensor (B,)) is False.

        The rows that stay are gathered, so encoders still see only present rows.
        """
        present = self.present[modality]
        new_present = present & keep.to(present.device)
        # positions, within the current present rows, of the rows that survive
        rows = new_present[present].nonzero(as_tuple=True)[0]
        inputs = dict(self.inputs)
        if rows.numel():
            inputs[modality] = take_rows(self.inputs[modality], rows)
        else:
            inputs.pop(modality, None)
        return replace(self, inputs=inputs, present={**self.present, modality: new_present})

    def with_modalities(self, keep: Iterable[str]) -> ModalityBatch:
        """The same samples with every modality not in ``keep`` marked absent for all of them."""
        keep = set(keep)
        unknown = keep - set(self.present)
        if unknown:
            raise ModfuseError(f"unknown modalities {sorted(unknown)}; the batch has {self.modalities}")
        batch = self
        for m in self.modalities:
            if m not in keep:
                batch = batch.mask_modality(m, torch.zeros_like(self.present[m]))
        return batch

    def select(self, rows: Sequence[int] | Tensor) -> ModalityBatch:
        """A new batch holding samples ``rows`` (batch positions), in that order."""
        rows_t = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        inputs, present = {}, {}
        for m, p in self.present.items():
            # row number of each sample within inputs[m] (-1 where absent)
            row_of = torch.cumsum(p.long(), 0) - 1
            chosen = p.index_select(0, rows_t)
            present[m] = chosen
            if bool(chosen.any()):
                inputs[m] = take_rows(self.inputs[m], row_of.index_select(0, rows_t)[chosen])
        target = self.target
        if isinstance(target, Tensor):
            target = target.index_select(0, rows_t.to(target.device))
        elif isinstance(target, Mapping):
            target = {k: v.index_select(0, rows_t.to(v.device)) for k, v in target.items()}
        return ModalityBatch(inputs, present, target, [self.ids[i] for i in rows_t.tolist()])


def scatter_rows(values: Tensor, present: Tensor, fill: float = 0.0) -> Tensor:
    """Place per-present-row ``values`` (n_present, ...) back in batch order: (B, ...).

    Rows of absent samples get ``fill``; they are never read as data by modfuse models, which
    always combine them with ``present``.
    """
    out = values.new_full((present.shape[0], *values.shape[1:]), fill)
    return out.index_copy(0, present.nonzero(as_tuple=True)[0], values)


def encode_present(encoder: torch.nn.Module, batch: ModalityBatch, modality: str) -> tuple[Tensor, Tensor]:
    """Run ``encoder`` only on the present rows of ``modality``.

    Returns:
        features: encoder output for the present rows, (n_present, d) or (n_present, tokens, d).
        index: LongTensor (n_present,) of their batch positions (for ``index_copy``/scatter).

    Errors raised by the encoder about its input are re-raised with the modality and the ids
    of the rows it was given.
    """
    index = batch.index(modality)
    if index.numel() == 0:
        return _no_rows(encoder, batch.device), index
    try:
        features = encoder(batch.inputs[modality])
    except ModfuseError as exc:
        ids = batch.ids_of(modality)
        raise exc.located(
            modality=modality, sample_id=exc.sample_id if exc.sample_id is not None else _short(ids)
        ) from exc
    return features, index


def _no_rows(encoder: torch.nn.Module, device: torch.device) -> Tensor:
    """Zero-row output of the declared shape: encoders are never called on an empty input."""
    tokens = getattr(encoder, "out_tokens", None)
    out_dim: int = int(encoder.out_dim)  # type: ignore[arg-type]  # every encoder's int; nn.Module types attributes Tensor | Module
    shape = (0, out_dim) if tokens is None else (0, int(tokens), out_dim)
    return torch.zeros(shape, device=device)


def _short(ids: list[Any]) -> str:
    head = ", ".join(map(str, ids[:5]))
    return f"one of [{head}{', ...' if len(ids) > 5 else ''}]"
