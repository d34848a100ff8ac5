"""The ``modfuse`` entry point: parse the command name and dispatch to its module (see
[`modfuse.cli`][modfuse.cli] for the commands, the recipe keys and the run folder layout).

Nothing here imports torch or Lightning, so ``modfuse --help`` answers at once.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``modfuse`` command line.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status (0 on success; 2 on bad input, with the message on stderr).
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
        from modfuse.cli.merge import merge_main

        return merge_main(rest)
    if command == "adapt":
        from modfuse.cli.merge import adapt_main

        return adapt_main(rest)
    if command == "prepare-cache":
        from modfuse.cli.cache import prepare_cache_main

        return prepare_cache_main(rest)
    if command in ("explain", "robustness"):
        from modfuse.cli.reports import report_main

        return report_main(command, rest, description=COMMANDS[command])
    from modfuse.cli.recipes import run_recipe

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
