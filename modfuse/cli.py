"""The ``modfuse`` command line: recipes through LightningCLI, plus merge, explain and robustness.

Commands (``modfuse --help`` lists them):

- ``modfuse fit|validate|test|predict --config recipes/NAME.yaml [--section.key value ...]``:
  LightningCLI with [`FusionTask`][modfuse.training.task.FusionTask] as the model and any
  [`MultiModalDataModule`][modfuse.data.MultiModalDataModule] subclass as the data, both given as
  ``class_path``/``init_args`` in the recipe (as in torchgeo).
- ``modfuse merge ...``: merge separately trained Lego blocks (`modfuse.lego.cli`).
- ``modfuse prepare-cache --config recipes/NAME.yaml -o DIR``: decode the recipe's data once
  into a sharded cache (`modfuse.cli_cache`); train from it with
  ``data: {class_path: modfuse.data.cache.CachedDataModule, init_args: {cache_dir: DIR}}``.
- ``modfuse explain|robustness --config recipes/NAME.yaml [--ckpt_path P] [--out_dir D]``:
  rebuild the recipe's task and data, load a checkpoint and write the report.

Every run writes into the recipe's ``trainer.default_root_dir`` (default ``runs/default``)::

    checkpoints/best.ckpt     best epoch by the task's monitored metric (e.g. val/auroc)
    checkpoints/last.ckpt     latest state, for ``fit --ckpt_path last`` after a crash
    csv/, tensorboard/        CSV and TensorBoard logs (one version per run)
    metrics.json              final metrics of the last fit (and of the compared strategies)
    predictions.csv           written by ``predict``

``test``, ``validate``, ``predict``, ``explain`` and ``robustness`` use ``checkpoints/best.ckpt``
unless ``--ckpt_path`` names another file (or ``last``): a ``.ckpt``, or a ``.safetensors`` model
written by ``modfuse.save`` or ``modfuse merge`` (its own model is evaluated on the recipe's data).

Recipe keys beyond LightningCLI's (all optional):

- ``compare: [late, attention]``: after ``fit``, train these fusion strategies on the same
  encoders (fresh copies of the recipe's initial encoders), data and trainer settings, and
  report their test metrics beside the recipe's model.
- ``test_after_fit: true``: evaluate the best checkpoint on the test split after ``fit``.
- ``num_threads: N``: torch's intra-op CPU threads (default: torch's choice, one per core).
  Small models gain little from more threads, and on a CPU shared with other processes each
  extra thread can make every operation wait for a descheduled one (the quickstart trains
  ~50 times slower with 2 threads than with 1 on a loaded 2-core machine), so the synthetic
  recipes set 1.
- ``checkpoint_every_n_steps: N``: also refresh ``last.ckpt`` every N optimizer steps, so a
  run killed mid-epoch resumes mid-epoch (the position in the training order, which
  [`MultiModalDataModule`][modfuse.data.MultiModalDataModule] keeps in its checkpoint state, and the random
  number generators are part of the checkpoint, so the resumed run matches an uninterrupted
  one).

Checkpoints are loaded with ``torch.load(weights_only=True)`` (no arbitrary unpickling).

Multi-GPU / multi-node: set ``trainer.strategy`` (``ddp``, ``fsdp``), ``trainer.devices`` and
``trainer.num_nodes`` in the recipe or on the command line and launch with ``torchrun`` or
``srun`` exactly as for any Lightning script (see ``docs/guides/scaling.md``). DDP runs with
``find_unused_parameters=True`` unless the recipe sets it: a process whose batch has no row
with some modality never runs that modality's encoder, and without it the other processes
would wait forever for that encoder's gradients.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["COMMANDS", "main"]

COMMANDS = {
    "fit": "train a recipe's model (checkpoints, logs, metrics table)",
    "validate": "evaluate a checkpoint (default: the best one) on the validation split",
    "test": "evaluate a checkpoint (default: the best one) on the test split",
    "predict": "write per-sample predictions of a checkpoint to predictions.csv",
    "merge": "merge separately trained Lego blocks into one multimodal model",
    "adapt": "adapt a merged Lego model to paired unlabelled data with fused pseudo-labels",
    "explain": "modality Shapley values and attributions of a checkpoint (tables + PNG plots)",
    "robustness": "metrics per modality subset and under simulated missingness (tables + PNG plots)",
    "prepare-cache": "decode a recipe's data once into a sharded cache folder to train from",
}


# ---------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``modfuse`` command line.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status (0 on success).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if args[0] == "--version":
        from modfuse import __version__

        print(__version__)
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"modfuse: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from modfuse.errors import MissingExtraError, ModfuseError

    try:
        return _run(command, rest, args if argv is not None else None)
    except (ModfuseError, MissingExtraError) as exc:
        # bad input (a checkpoint, a data file, an option): a message, not a traceback
        print(f"modfuse {command}: error: {exc}", file=sys.stderr)
        return 2


def _run(command: str, rest: list[str], recipe_args: list[str] | None) -> int:
    if command == "merge":
        from modfuse.lego.cli import merge_main

        return int(merge_main(rest) or 0)
    if command == "adapt":
        from modfuse.lego.cli import adapt_main

        return int(adapt_main(rest) or 0)
    if command == "prepare-cache":
        from modfuse.cli_cache import prepare_cache_main

        return prepare_cache_main(rest)
    # torch and Lightning are imported only now, so `modfuse --help` answers at once
    from modfuse.cli_recipes import report_main, run_recipe

    if command in ("explain", "robustness"):
        return report_main(command, rest, description=COMMANDS[command])
    # LightningCLI reads sys.argv itself when given None; passing both makes it warn
    run_recipe(recipe_args)
    return 0


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: modfuse <command> [--config recipes/NAME.yaml] [options]",
        "",
        "Fuse modalities with per-sample missingness: train, evaluate, merge and explain.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()),
        "",
        "`modfuse <command> --help` shows a command's options.",
        "quickstart (no data needed): modfuse fit --config recipes/quickstart.yaml",
    ]
    return "\n".join(lines)


def __getattr__(name: str) -> Any:
    # the recipe machinery (ModfuseCLI, checkpoint_path, ...) lives in modfuse.cli_recipes;
    # dunder look-ups (the import system asks for __path__) must not import it
    if name.startswith("__"):
        raise AttributeError(f"module 'modfuse.cli' has no attribute {name!r}")
    return getattr(importlib.import_module("modfuse.cli_recipes"), name)


if __name__ == "__main__":
    sys.exit(main())
