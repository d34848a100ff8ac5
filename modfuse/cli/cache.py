"""``modfuse prepare-cache --config recipe.yaml -o DIR``: decode a recipe's data once.

The recipe's datamodule is built exactly as ``modfuse fit`` builds it (LightningCLI, the same
overrides), set up (so its splits are drawn), and its whole dataset is written with
[`modfuse.data.cache.write_cache()`][modfuse.data.cache.write_cache], splits included. To train from the cache, replace the
recipe's ``data`` section with::

    data:
      class_path: modfuse.data.cache.CachedDataModule
      init_args: {cache_dir: DIR, batch_size: 64, num_workers: 2}
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from unittest import mock

__all__ = ["prepare_cache_main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modfuse prepare-cache",
        description="decode a recipe's data once into a sharded cache folder to train from",
        add_help=False,
    )
    parser.add_argument("-o", "--out", required=True, help="the cache folder to create")
    parser.add_argument("--shard_size", type=int, default=1024, help="at most this many samples per shard (1024)")
    parser.add_argument("--shard_mb", type=float, default=256, help="close a shard at this many MiB (default 256)")
    parser.add_argument("--num_workers", type=int, default=0, help="decoding worker processes (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing cache folder")
    return parser


def prepare_cache_main(argv: Sequence[str]) -> int:
    """Run ``modfuse prepare-cache``; ``argv`` holds ``--config`` and any recipe overrides."""
    parser = _parser()
    if "-h" in argv or "--help" in argv:
        parser.print_help()
        print("\nother options: --config recipes/NAME.yaml and any recipe override (--data.init_args.x ...)")
        return 0
    options, rest = parser.parse_known_args(list(argv))
    from modfuse.cli.recipes import ModfuseCLI
    from modfuse.data.cache import write_cache

    # the recipe options go to LightningCLI as args; it warns when sys.argv carries them too
    with mock.patch.object(sys, "argv", sys.argv[:1]):
        cli = ModfuseCLI(args=list(rest), run=False)
    datamodule = cli.datamodule
    datamodule.setup("fit")
    splits = None if datamodule.splits is None else {k: v.tolist() for k, v in datamodule.splits.items()}

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} samples", end="", file=sys.stderr, flush=True)

    report = write_cache(
        datamodule.dataset,
        options.out,
        shard_size=options.shard_size,
        shard_bytes=int(options.shard_mb * 2**20),
        num_workers=options.num_workers,
        splits=splits,
        overwrite=options.overwrite,
        progress=progress,
    )
    print(file=sys.stderr)
    present = ", ".join(f"{m} {k}" for m, k in report.present.items())
    print(
        f"cache {report.path}: {report.n_samples} samples in {report.n_shards} shards ({present}), {report.seconds:.1f} s"
    )
    if report.read_errors:
        print(f"{len(report.read_errors)} values marked missing because of bad input (index.json: read_errors):")
        for error in report.read_errors[:20]:
            print(f"  {error['id']!r} {error['modality']}: {error['error']}")
    return 0
