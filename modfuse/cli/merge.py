"""``modfuse merge`` and ``modfuse adapt``: merge trained blocks from checkpoints into one shareable
model file, and adapt a merged model to unlabelled paired data.

Forms::

    modfuse merge A.ckpt B.ckpt C.safetensors --method poe -o merged.safetensors
    modfuse merge A.ckpt B.ckpt --method precision --option prior_correction=true -o merged.safetensors
    modfuse merge merge.yaml            # blocks, weights, method, head_merge, output
    modfuse merge A.ckpt B.ckpt -o merged.safetensors --validate recipes/esol.yaml
    modfuse merge A.ckpt B.ckpt -o merged.safetensors --choose-on recipes/esol.yaml
    modfuse adapt merged.safetensors --data prepared/cohort --method agreement -o adapted.safetensors

The yaml form::

    blocks:
      - path: xray.ckpt
        weight: 2.0
      - ecg.ckpt                # weight 1
    method: poe                 # or {name: poe, prior_correction: true}; default auto
    method_options: {prior_correction: true}
    head_merge: mean
    output: merged.safetensors  # relative paths are relative to the yaml file

``--validate DATA`` (a recipe yaml whose ``data:`` is a modfuse datamodule, or a prepared
manifest folder / its ``manifest.json`` / its ``manifest.csv``) evaluates, on DATA's labelled
validation rows, every non-empty subset of modalities: each block alone versus the merged
model ([`modfuse.lego.validate.subset_report()`][modfuse.lego.validate.subset_report]); the table is printed and written as CSV
next to the output (``<output>.validation.csv``, or ``--validate-out``).

``--choose-on DATA`` chooses, on DATA's labelled validation rows, per subset of modalities,
between each block alone, the merge method as is and validated expert weights
(`modfuse.lego.merge()` with ``validation=``); the choice is saved in the output file.

Checkpoints are read with ``torch.load(..., weights_only=True)`` and rebuilt from the JSON
model config ``FusionTask`` stores; nothing is unpickled. The output loads with
[`modfuse.lego.load()`][modfuse.lego.load].
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import yaml
from torch import Tensor

from modfuse.errors import ModfuseError
from modfuse.lego.block import LegoBlock
from modfuse.lego.io import load_any, save
from modfuse.lego.merge import LegoMerge, check_statistics
from modfuse.lego.methods import available_methods

__all__ = ["adapt_main", "build_adapt_parser", "build_merge_parser", "load_datamodule", "merge_main"]


def build_merge_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the ``merge`` arguments to ``parser`` (e.g. a sub-parser of ``modfuse``) or a new one."""
    parser = parser or argparse.ArgumentParser(
        prog="modfuse merge", description="merge trained blocks from checkpoints into one shareable model file"
    )
    parser.add_argument(
        "inputs", nargs="+", help="block files (.ckpt from FusionTask, or .safetensors), or one .yaml merge config"
    )
    parser.add_argument(
        "--method",
        default=None,
        help=f"merge method (default auto: poe / precision / hazard for calibrated blocks; {available_methods()})",
    )
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="a merge method option (repeatable)"
    )
    parser.add_argument("--head-merge", default=None, choices=["mean", "slerp"], help="head merge (default mean)")
    parser.add_argument("--weights", nargs="+", type=float, default=None, help="one weight per block")
    parser.add_argument("-o", "--output", default=None, help="output .safetensors file")
    parser.add_argument(
        "--validate",
        default=None,
        metavar="DATA",
        help="labelled data (recipe yaml or manifest) to compare each block alone with the merge, per subset",
    )
    parser.add_argument("--validate-split", default="val", choices=["train", "val", "test"], help="rows to use")
    parser.add_argument("--validate-out", default=None, help="CSV for the per-subset table")
    parser.add_argument(
        "--choose-on",
        default=None,
        metavar="DATA",
        help="labelled paired data (recipe yaml or manifest) whose val rows choose, per subset of modalities, "
        "each block alone, the merge or validated expert weights, whichever scores best",
    )
    parser.add_argument("--choose-metric", default=None, help="metric to choose on (default: the task's main metric)")
    return parser


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ModfuseError(f"cannot read merge config {path}: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("blocks"), list) or not config["blocks"]:
        raise ModfuseError(f"merge config {path}: expected a mapping with a non-empty 'blocks' list")
    paths, weights = [], []
    for entry in config["blocks"]:
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict) or "path" not in entry:
            raise ModfuseError(
                f"merge config {path}: each block is a path or {{path: ..., weight: ...}}, found {entry!r}"
            )
        paths.append(_relative(path, entry["path"]))
        weights.append(float(entry.get("weight", 1.0)))
    out = config.get("output")
    method, options = config.get("method"), dict(config.get("method_options") or {})
    if isinstance(method, dict):  # {name: poe, option: value, ...}
        options = {**{k: v for k, v in method.items() if k != "name"}, **options}
        method = method.get("name")
    return {
        "paths": paths,
        "weights": weights,
        "method": method,
        "method_options": options,
        "head_merge": config.get("head_merge"),
        "output": _relative(path, out) if out else None,
    }


def _relative(config_path: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else config_path.parent / p


def _resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line flags override the yaml config; defaults fill the rest."""
    if len(args.inputs) == 1 and Path(args.inputs[0]).suffix in (".yaml", ".yml"):
        spec = _read_yaml(Path(args.inputs[0]))
    else:
        spec = {"paths": [Path(p) for p in args.inputs], "weights": None, "method": None, "head_merge": None}
        spec["output"], spec["method_options"] = None, {}
    spec["method"] = args.method or spec["method"] or "auto"
    for item in args.option:
        if "=" not in item:
            raise ModfuseError(f"--option expects KEY=VALUE, found {item!r}")
        key, value = item.split("=", 1)
        spec["method_options"][key.strip()] = value.strip()
    spec["head_merge"] = args.head_merge or spec["head_merge"] or "mean"
    spec["weights"] = args.weights if args.weights is not None else spec["weights"]
    spec["output"] = Path(args.output) if args.output else spec["output"]
    if spec["output"] is None:
        raise ModfuseError("no output file: pass -o merged.safetensors (or 'output:' in the yaml)")
    if spec["output"].is_dir():
        raise ModfuseError(f"the output {spec['output']} is a folder; -o names the .safetensors file to write")
    if spec["output"].parent.exists() and not spec["output"].parent.is_dir():
        raise ModfuseError(f"the output's folder {spec['output'].parent} is a file")
    return spec


def _load_blocks(paths: Sequence[Path]) -> list[LegoBlock]:
    blocks = []
    for p in paths:
        model = load_any(p)
        if not isinstance(model, LegoBlock):
            raise ModfuseError(f"{p} holds a {type(model).__name__}; modfuse merge combines LegoBlock models")
        blocks.append(model)
    return blocks


def merge_main(argv: Sequence[str] | None = None) -> int:
    """Run ``modfuse merge`` with ``argv`` (without the program and sub-command names).

    Returns:
        0 on success; 2 on bad input (the message is printed to stderr).
    """
    args = build_merge_parser().parse_args(list(argv) if argv is not None else None)
    start = time.perf_counter()
    try:
        spec = _resolve(args)
        blocks = _load_blocks(spec["paths"])
        check_statistics(blocks, spec["method"])  # raises / warns naming the blocks
        merged = LegoMerge(
            blocks,
            method=spec["method"],
            head_merge=spec["head_merge"],
            weights=spec["weights"],
            method_options=spec["method_options"],
        )
        if args.choose_on:
            merged = _choose(merged, args.choose_on, args.choose_metric)
        save(merged, spec["output"])
        seconds = time.perf_counter() - start
        _summary(merged, spec, seconds)
        if args.validate:
            out = Path(args.validate_out) if args.validate_out else spec["output"].with_suffix(".validation.csv")
            _validate(merged, args.validate, args.validate_split, out)
    except ModfuseError as exc:
        print(f"modfuse merge: error: {exc}", file=sys.stderr)
        return 2
    return 0


def load_datamodule(data: str | Path) -> Any:
    """A datamodule from a recipe yaml (its ``data:`` section) or a prepared manifest.

    A recipe's ``data.class_path`` must name a [`MultiModalDataModule`][modfuse.data.MultiModalDataModule]
    subclass (it is imported and built with ``init_args``); a manifest (folder,
    ``manifest.json`` or the ``manifest.csv`` table beside it) is read with
    [`ManifestDataModule`][modfuse.datasets.manifest.ManifestDataModule] and its default split, without
    standardisation (the blocks' encoders carry their own input statistics).
    """
    import importlib

    from modfuse.data.datamodule import MultiModalDataModule
    from modfuse.datasets.manifest import ManifestDataModule

    path = Path(data)
    if path.suffix in (".yaml", ".yml"):
        try:
            recipe = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ModfuseError(f"cannot read recipe {path}: {exc}") from exc
        section = recipe.get("data") if isinstance(recipe, dict) else None
        if not isinstance(section, dict) or "class_path" not in section:
            raise ModfuseError(f"recipe {path}: expected a 'data:' section with a class_path")
        module, _, name = str(section["class_path"]).rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ModfuseError(f"recipe {path}: cannot import data class {section['class_path']!r}: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, MultiModalDataModule)):
            raise ModfuseError(f"recipe {path}: {section['class_path']!r} is not a MultiModalDataModule")
        kwargs = dict(section.get("init_args") or {})
        if "manifest" in kwargs and not Path(kwargs["manifest"]).exists():
            kwargs["manifest"] = str(_relative(path, kwargs["manifest"]))
        return cls(**kwargs)
    if path.suffix == ".csv":
        path = path.parent
    if not path.exists():
        raise ModfuseError(f"validation data {path}: not found (expected a recipe yaml or a manifest folder)")
    return ManifestDataModule(path, standardize=False)


def _validate(merged: LegoMerge, data: str, split: str, out: Path) -> None:
    from modfuse.lego.validate import subset_report

    dm = load_datamodule(data)
    dm.setup()
    dm.predict_split = split  # the split's rows in order, unaugmented
    report = subset_report(merged, dm.predict_dataloader())
    out.parent.mkdir(parents=True, exist_ok=True)
    report.to_csv(out, index=False)
    print(f"\nvalidation on {data} ({split} rows): each block alone vs the merged model, per subset")
    print(report.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    worse = report[report["merged - best"] < 0] if "merged - best" in report else report.iloc[:0]
    if len(worse):
        print(f"WARNING: the merge is worse than its best block on {len(worse)} subset(s): {list(worse['subset'])}")
    print(f"table written to {out}")


def _choose(merged: LegoMerge, data: str, metric: str | None) -> LegoMerge:
    """The merge with per-subset weights chosen on DATA's validation rows (printed)."""
    from modfuse.lego.merge import choose_on

    dm = load_datamodule(data)
    dm.setup()
    chosen = choose_on(merged, dm.val_dataloader(), metric)
    print(f"chosen on {data} (val rows), per subset of modalities:")
    for c in chosen.selection:
        print(f"  {c['subset']:<24} {c['chosen']:<22} ({c['rows']} rows)")
    return chosen


def _summary(merged: LegoMerge, spec: dict[str, Any], seconds: float) -> None:
    n_params = sum(p.numel() for p in merged.parameters())
    (task, ts), *_ = merged.tasks.items()
    lines = [
        f"merged {len(merged.blocks)} blocks -> {spec['output']}",
        f"  modalities : {', '.join(merged.modalities)}",
        f"  task       : {task} ({ts.kind}, {ts.num_outputs} output{'s' if ts.num_outputs > 1 else ''})",
        f"  latent     : {merged.blocks[0].latent_shape}",
        f"  method     : {merged.resolved_method} ({merged.space} space; requested {merged.method}; "
        f"options {merged.method_options}; head merge: {merged.head_merge})",
        f"  weights    : {[round(float(w), 4) for w in cast(Tensor, merged.weights)]}",
        f"  parameters : {n_params:,}",
        f"  wall time  : {seconds:.2f} s",
    ]
    print("\n".join(lines))


def build_adapt_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The ``modfuse adapt`` arguments (label-free adaptation of a merged model)."""
    parser = parser or argparse.ArgumentParser(
        prog="modfuse adapt", description="adapt a merged Lego model to paired unlabelled data (no labels read)"
    )
    parser.add_argument("model", help="merged model (.safetensors written by modfuse merge)")
    parser.add_argument("--data", required=True, help="paired target data: a recipe yaml or a manifest folder")
    parser.add_argument("--split", default="train", choices=["train", "val", "test"], help="target rows")
    parser.add_argument(
        "--method",
        default="agreement",
        choices=["agreement", "entropy", "calibration"],
        help="pseudo-label rule, or calibration: re-calibrate the blocks only (no weight trained)",
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", required=True, help="output .safetensors file")
    return parser


def adapt_main(argv: Sequence[str] | None = None) -> int:
    """Run ``modfuse adapt`` with ``argv``; 0 on success, 2 on bad input."""
    from modfuse.lego.adapt import adapt

    args = build_adapt_parser().parse_args(list(argv) if argv is not None else None)
    start = time.perf_counter()
    try:
        merged = load_any(Path(args.model))
        if not isinstance(merged, LegoMerge):
            raise ModfuseError(f"{args.model} holds a {type(merged).__name__}; modfuse adapt adapts a LegoMerge")
        dm = load_datamodule(args.data)
        dm.setup()
        rows = dm.splits[args.split]
        adapted = adapt(
            merged,
            dm.dataset,
            method=args.method,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            rows=rows,
            seed=args.seed,
        )
        save(adapted, Path(args.output))
    except ModfuseError as exc:
        print(f"modfuse adapt: error: {exc}", file=sys.stderr)
        return 2
    info = cast(dict[str, Any], adapted.adaptation)
    print(
        f"adapted {len(adapted.blocks)} blocks ({', '.join(adapted.modalities)}) -> {args.output}\n"
        f"  method     : {info['method']} ({info['used']} of {info['rows']} unlabelled rows used, "
        f"{info['epochs']} epochs, lr {args.lr})\n"
        f"  wall time  : {time.perf_counter() - start:.2f} s"
    )
    return 0
