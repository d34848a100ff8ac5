"""The ``modfuse`` command line: recipes through LightningCLI, plus merge, explain and robustness.

Commands (``modfuse --help`` lists them):

- ``modfuse fit|validate|test|predict --config recipes/NAME.yaml [--section.key value ...]``:
  LightningCLI with [`FusionTask`][modfuse.training.task.FusionTask] as the model and any
  [`MultiModalDataModule`][modfuse.data.MultiModalDataModule] subclass as the data, both given as
  ``class_path``/``init_args`` in the recipe (as in torchgeo).
- ``modfuse merge ...``: merge separately trained Lego blocks (`modfuse.cli.merge`).
- ``modfuse prepare-cache --config recipes/NAME.yaml -o DIR``: decode the recipe's data once
  into a sharded cache (`modfuse.cli.cache`); train from it with
  ``data: {class_path: modfuse.data.cache.CachedDataModule, init_args: {cache_dir: DIR}}``.
- ``modfuse explain|robustness --config recipes/NAME.yaml [--ckpt_path P] [--out_dir D]``:
  rebuild the recipe's task and data, load a checkpoint and write the report.

Every run writes into the recipe's ``trainer.default_root_dir`` (default ``runs/default``)::

    checkpoints/best.ckpt     best epoch by the task's monitored metric (e.g. val/auroc)
    checkpoints/last.ckpt     latest state, for ``fit --ckpt_path last`` after a crash
    csv/, tensorboard/        CSV and TensorBoard logs (one version per run)
    metrics.json              final metrics of the last fit (and of the compared strategies)
    predictions.csv           written by ``predict [--split test|train|val|all]``: id,
                              predictions, <task>_true labels, present_<modality>

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
- ``optimizer:`` / ``lr_scheduler:``: LightningCLI's keys (``class_path`` + ``init_args``, or a
  class name, e.g. ``optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 0.001}}``,
  ``lr_scheduler: {class_path: torch.optim.lr_scheduler.CosineAnnealingLR, init_args:
  {T_max: 20}}``); they replace the task's optimizer / scheduler (a scheduler steps once per
  epoch) and are checked before anything trains, with an error naming the key.

``fit`` ends with a table (and ``metrics.json``) of the best checkpoint's validation metrics
(re-evaluated, not the last epoch's) and, with ``test_after_fit`` or ``compare``, its test
metrics, with its path, epoch and monitored metric. ``fit --ckpt_path last
--trainer.max_epochs N`` extends a finished run to N epochs with any of the task's schedulers. A Lego recipe
(trained in stages) writes a stage checkpoint after each stage and resumes from it with
``--ckpt_path last`` (see [`modfuse.cli.stages`][modfuse.cli.stages]).

Checkpoints are loaded with ``torch.load(weights_only=True)`` (no arbitrary unpickling).

Multi-GPU / multi-node: set ``trainer.strategy`` (``ddp``, ``fsdp``), ``trainer.devices`` and
``trainer.num_nodes`` in the recipe or on the command line and launch with ``torchrun`` or
``srun`` exactly as for any Lightning script (see ``docs/guides/scaling.md``). DDP runs with
``find_unused_parameters=True`` unless the recipe sets it: a process whose batch has no row
with some modality never runs that modality's encoder, and without it the other processes
would wait forever for that encoder's gradients.

The package has one module per concern: `modfuse.cli.entry` (argument parsing and dispatch),
`modfuse.cli.recipes` (``fit``/``validate``/``test``/``predict`` through LightningCLI, staged
fits and their resumption), `modfuse.cli.checkpoints` (which checkpoint a command loads, read
safely), `modfuse.cli.reports` (the metrics tables, ``predictions.csv``, ``explain`` and
``robustness``), `modfuse.cli.merge` (``merge`` and ``adapt``) and `modfuse.cli.cache`
(``prepare-cache``). Only the entry point is imported here, so ``modfuse --help`` answers
without importing torch.
"""

from __future__ import annotations

from modfuse.cli.entry import COMMANDS, main

__all__ = ["COMMANDS", "main"]
