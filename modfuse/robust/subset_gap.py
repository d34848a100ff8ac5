"""Subset gap: the fused model on each modality subset next to a specialist trained on it alone.

A fused model is only as robust as its worst subset: when modality A is easy, joint training
leaves the encoders of the other modalities (and the fusion head on inputs without A) weak,
so the model with only B predicts far worse than a model trained on B alone. The subset gap
measures that per subset, and `competition()` reads the unimodal rows of it: the
modalities with a large gap are the ones the fused model under-uses.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from torch import Tensor, nn

from modfuse.core.model import ModelOutput, unwrap_model
from modfuse.data.batch import ModalityBatch
from modfuse.errors import ModfuseError
from modfuse.robust.evaluate import as_fusion, evaluate_subsets, modality_subsets, subset_name
from modfuse.utils.progress import progress

__all__ = [
    "SubsetModel",
    "competition",
    "plot_subset_gap",
    "subset_gap",
    "train_specialists",
    "write_subset_gap",
]

Specialists = str | Mapping[Any, Any] | Callable[[tuple[str, ...]], Any]


class SubsetModel(nn.Module):
    """A fusion model that only ever sees ``subset``: every other modality is marked absent.

    Wrapping a freshly initialised copy of a fused model and training it makes a specialist
    with the same encoders and head configuration as the fused model, trained on the subset
    alone (the encoders of the other modalities never receive data).

    Args:
        model: a fusion model.
        subset: the modalities it may use.

    Shapes:
        ModalityBatch of B samples -> the wrapped model's outputs for those B samples.
    """

    def __init__(self, model: nn.Module, subset: Sequence[str]) -> None:
        super().__init__()
        self.inner = unwrap_model(model)
        self.subset = tuple(subset)
        inner = as_fusion(self.inner)
        unknown = set(self.subset) - set(inner.modalities)
        if not self.subset or unknown:
            raise ModfuseError(f"subset must be non-empty and drawn from {inner.modalities}, found {subset}")
        self.modalities = list(self.subset)
        self.tasks = inner.tasks

    def forward(self, batch: ModalityBatch) -> ModelOutput:
        return self.inner(batch.with_modalities([m for m in self.subset if m in batch.present]))

    def compute_loss(self, outputs: ModelOutput, batch: ModalityBatch) -> Tensor:
        from modfuse.fusion.late import task_loss

        own_loss = getattr(self.inner, "compute_loss", None)
        if own_loss is not None:
            return own_loss(outputs, batch.with_modalities(self.subset))
        return task_loss(self.tasks, outputs.logits, batch)


def _reset(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every sub-module that can re-initialise itself re-initialised."""
    fresh = copy.deepcopy(module)
    for sub in fresh.modules():
        reset = getattr(sub, "reset_parameters", None)
        if sub is not fresh and callable(reset):
            reset()
    # a copy of a model in eval mode would train with its dropout off (Lightning keeps modes)
    return fresh.train()


def train_specialists(
    model: Any,
    datamodule: Any,
    subsets: Sequence[tuple[str, ...]],
    max_epochs: int = 10,
    task_kwargs: Mapping[str, Any] | None = None,
    trainer_kwargs: Mapping[str, Any] | None = None,
) -> dict[tuple[str, ...], nn.Module]:
    """Train one specialist per subset: a re-initialised copy of ``model`` seeing only the subset.

    The budget is the same for every specialist: ``max_epochs`` epochs of
    [`FusionTask`][modfuse.training.task.FusionTask] (``task_kwargs``: lr, weight decay, the
    missingness-aware options...) on ``datamodule``'s train split, keeping the weights of the
    best validation epoch when the datamodule has a validation split.

    Returns:
        subset -> trained `SubsetModel` in eval mode.
    """
    from modfuse.training.runner import fit

    base = unwrap_model(model)
    # the bar over subsets is the progress shown; a Lightning bar per specialist would nest in it
    options = {
        "accelerator": "cpu",
        "num_sanity_val_steps": 0,
        "enable_progress_bar": False,
        **dict(trainer_kwargs or {}),
    }
    out: dict[tuple[str, ...], nn.Module] = {}
    for subset in progress(subsets, "subset specialists"):
        specialist = SubsetModel(_reset(base), subset)
        fit(specialist, datamodule, max_epochs=max_epochs, task_kwargs=task_kwargs, trainer_kwargs=options)
        out[tuple(subset)] = specialist.eval()
    return out


def _lower_is_better(metric: str) -> bool:
    name = metric.rpartition("/")[2]
    return name in ("rmse", "mae", "mse", "loss")


def _key(subset: Any) -> tuple[str, ...]:
    if isinstance(subset, str):
        return tuple(subset.split("+"))
    return tuple(subset)


def subset_gap(
    model: Any,
    data: Any,
    specialists: Specialists = "train",
    metric: str | None = None,
    subsets: Sequence[Sequence[str]] | None = None,
    train_data: Any = None,
    max_epochs: int = 10,
    task_kwargs: Mapping[str, Any] | None = None,
    exact_max: int = 8,
    max_subsets: int = 64,
    seed: int = 0,
    batch_size: int = 64,
) -> pd.DataFrame:
    """The fused model's metric on every modality subset next to a specialist's, and the gap.

    For each non-empty subset S (all 2^M - 1 for M <= ``exact_max``, ``max_subsets`` sampled
    above, see `modality_subsets()`), the fused model is evaluated on ``data`` with every
    modality outside S marked absent (`evaluate_subsets()`), and so is the specialist of S.

    Args:
        model: the fused model (or a FusionTask).
        data: evaluation data (see `evaluate_subsets()`; a datamodule: its test split).
        specialists: ``"train"`` (train them with `train_specialists()` on ``train_data``,
            default ``data``, which must then be a datamodule), a dict subset -> model (a
            subset as a tuple of names or a ``"a+b"`` string; each model must accept the
            subset's modalities), or a callable subset -> model.
        metric: the metric column (default: the first task's main metric; a name of the
            task's metrics, e.g. ``"accuracy"``, or ``"task/accuracy"`` in multi-task models).
        subsets: the subsets (default as above).
        train_data: datamodule the specialists are trained on (``specialists="train"``).
        max_epochs: training budget of each specialist (``specialists="train"``).
        task_kwargs: FusionTask arguments of the specialists (``specialists="train"``).
        exact_max, max_subsets, seed: see `modality_subsets()`.
        batch_size: batch size when ``data`` is a dataset.

    Returns:
        One row per subset: ``subset``, ``size``, ``metric`` (its name), ``fused``,
        ``specialist``, ``gap`` (how much worse the fused model is: specialist - fused for
        scores such as accuracy, fused - specialist for errors such as RMSE), ``gap_relative``
        (gap / |specialist|) and ``n``. ``frame.attrs["competition"]`` holds
        `competition()` of it.
    """
    fused_model = unwrap_model(model)
    contract = as_fusion(fused_model)
    chosen = (
        modality_subsets(contract.modalities, exact_max, max_subsets, seed)
        if subsets is None
        else [tuple(s) for s in subsets]
    )
    if metric is None:
        spec = next(iter(contract.tasks.values()))
        metric = spec.main_metric[0]
    fused = evaluate_subsets(fused_model, data, metric, subsets=chosen, batch_size=batch_size)
    column = next(c for c in fused.columns if c == metric or c.endswith(f"/{metric.rpartition('/')[2]}"))
    models = _specialists(
        fused_model, specialists, chosen, train_data if train_data is not None else data, max_epochs, task_kwargs
    )
    rows = []
    for s, (_, fused_row) in zip(chosen, fused.iterrows()):
        alone = as_fusion(unwrap_model(models[s]))
        score = evaluate_subsets(
            alone, data, metric, subsets=[tuple(m for m in s if m in alone.modalities)], batch_size=batch_size
        )
        spec_value = float(score[column].iloc[0])
        fused_value = float(fused_row[column])
        gap = fused_value - spec_value if _lower_is_better(column) else spec_value - fused_value
        rows.append(
            {
                "subset": subset_name(s),
                "size": len(s),
                "metric": column,
                "fused": fused_value,
                "specialist": spec_value,
                "gap": gap,
                "gap_relative": gap / abs(spec_value) if spec_value else float("nan"),
                "n": int(fused_row["n"]),
            }
        )
    frame = pd.DataFrame(rows)
    frame.attrs["competition"] = competition(frame)
    return frame


def _specialists(
    model: nn.Module,
    given: Specialists,
    subsets: Sequence[tuple[str, ...]],
    train_data: Any,
    max_epochs: int,
    task_kwargs: Mapping[str, Any] | None,
) -> dict[tuple[str, ...], Any]:
    if isinstance(given, str):
        if given != "train":
            raise ModfuseError(f"specialists must be 'train', a dict subset -> model or a callable, found {given!r}")
        if not (hasattr(train_data, "train_dataloader") and hasattr(train_data, "setup")):
            raise ModfuseError(
                "specialists='train' needs a datamodule to train on (train_data=..., or data as a datamodule)"
            )
        return train_specialists(model, train_data, subsets, max_epochs, task_kwargs)
    if callable(given) and not isinstance(given, Mapping):
        return {s: given(s) for s in subsets}
    if not isinstance(given, Mapping):
        raise ModfuseError(
            f"specialists must be 'train', a dict subset -> model or a callable, found {type(given).__name__}"
        )
    by_key = {frozenset(_key(k)): v for k, v in given.items()}
    missing = [subset_name(s) for s in subsets if frozenset(s) not in by_key]
    if missing:
        raise ModfuseError(f"no specialist for subsets {missing}; pass one per subset (or specialists='train')")
    return {s: by_key[frozenset(s)] for s in subsets}


def competition(table: pd.DataFrame) -> pd.DataFrame:
    """Per modality m: the fused model with only m next to m's unimodal specialist.

    Args:
        table: output of `subset_gap()`.

    Returns:
        One row per modality, largest gap first: ``modality``, ``fused`` (fused model with
        only m), ``specialist``, ``gap``, ``gap_relative``. A large gap marks a modality the
        fused model under-uses (it leans on the others).
    """
    single = table[table["size"] == 1]
    out = single.rename(columns={"subset": "modality"})[["modality", "fused", "specialist", "gap", "gap_relative"]]
    return out.sort_values("gap", ascending=False).reset_index(drop=True)


def plot_subset_gap(table: pd.DataFrame) -> Figure:
    """Horizontal bar chart of the gap per subset (positive: fused worse than the specialist)."""
    rows = table.sort_values(["size", "subset"], ascending=[True, False])
    fig = Figure(figsize=(7, 0.8 + 0.3 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    colors = ["C3" if g > 0 else "C2" for g in rows["gap"]]
    ax.barh(rows["subset"], rows["gap"], color=colors)
    ax.axvline(0.0, color="black", linewidth=0.8)
    metric = str(table["metric"].iloc[0]) if len(table) else "metric"
    ax.set_xlabel(f"gap in {metric} (specialist better > 0 > fused better)")
    ax.set_ylabel("modalities used")
    ax.set_title(f"subset gap, mean {table['gap'].mean():.4f} (n={int(table['n'].iloc[0])})")
    return fig


def write_subset_gap(table: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Write ``subset_gap.csv``, ``subset_gap.png`` and ``competition.csv`` to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"table": out / "subset_gap.csv", "plot": out / "subset_gap.png", "competition": out / "competition.csv"}
    table.to_csv(paths["table"], index=False)
    plot_subset_gap(table).savefig(paths["plot"], dpi=100)
    table.attrs.get("competition", competition(table)).to_csv(paths["competition"], index=False)
    return paths
