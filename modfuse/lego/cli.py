"""``modfuse merge``: merge trained blocks from checkpoints into one shareable model file.

Forms::

    modfuse merge A.ckpt B.ckpt C.safetensors --method harmonic --head-merge mean -o merged.safetensors
    modfuse merge merge.yaml            # blocks, weights, method, head_merge, output

The yaml form::

    blocks:
      - path: xray.ckpt
        weight: 2.0
      - ecg.ckpt                # weight 1
    method: harmonic
    head_merge: mean
    output: merged.safetensors  # relative paths are relative to the yaml file

Checkpoints are read with ``torch.load(..., weights_only=True)`` and rebuilt from the JSON
model config ``FusionTask`` stores; nothing is unpickled. The output loads with
:func:`modfuse.lego.load`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from modfuse.errors import ModfuseError
from modfuse.lego.block import LegoBlock
from modfuse.lego.io import load_any, save
from modfuse.lego.merge import LegoMerge
from modfuse.lego.methods import available_methods

__all__ = ["build_merge_parser", "merge_main"]


def build_merge_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the ``merge`` arguments to ``parser`` (e.g. a sub-parser of ``modfuse``) or a new one."""
    parser = parser or argparse.ArgumentParser(prog="modfuse merge", description=__doc__.split("\n")[0])
    parser.add_argument(
        "inputs", nargs="+", help="block files (.ckpt from FusionTask, or .safetensors), or one .yaml merge config"
    )
    parser.add_argument("--method", default=None, help=f"latent merge method (default harmonic; {available_methods()})")
    parser.add_argument("--head-merge", default=None, choices=["mean", "slerp"], help="head merge (default mean)")
    parser.add_argument("--weights", nargs="+", type=float, default=None, help="one weight per block")
    parser.add_argument("-o", "--output", default=None, help="output .safetensors file")
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
    return {
        "paths": paths,
        "weights": weights,
        "method": config.get("method"),
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
        spec["output"] = None
    spec["method"] = args.method or spec["method"] or "harmonic"
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
        merged = LegoMerge(blocks, method=spec["method"], head_merge=spec["head_merge"], weights=spec["weights"])
        save(merged, spec["output"])
    except ModfuseError as exc:
        print(f"modfuse merge: error: {exc}", file=sys.stderr)
        return 2
    _summary(merged, spec, time.perf_counter() - start)
    return 0


def _summary(merged: LegoMerge, spec: dict[str, Any], seconds: float) -> None:
    n_params = sum(p.numel() for p in merged.parameters())
    (task, ts), *_ = merged.tasks.items()
    lines = [
        f"merged {len(merged.blocks)} blocks -> {spec['output']}",
        f"  modalities : {', '.join(merged.modalities)}",
        f"  task       : {task} ({ts.kind}, {ts.num_outputs} output{'s' if ts.num_outputs > 1 else ''})",
        f"  latent     : {merged.blocks[0].latent_shape}",
        f"  method     : {merged.method} (head merge: {merged.head_merge})",
        f"  weights    : {[round(w, 4) for w in merged.weights.tolist()]}",
        f"  parameters : {n_params:,}",
        f"  wall time  : {seconds:.2f} s",
    ]
    print("\n".join(lines))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(merge_main())
