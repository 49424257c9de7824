"""The `p2g` command. Each subcommand lives in its own module of this package and defines
`register(subparsers)`; heavy imports (torch, MONAI) happen inside the command functions so that
`p2g --help` is instant.

Exit codes: 0 success; 2 bad input or usage (one sentence on stderr, no traceback); 1 internal error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from p2gmed import __version__
from p2gmed.errors import InputError

#: subcommand -> module in this package
COMMANDS = {
    "data": "data_cmd",
    "pretrain": "pretrain_cmd",
    "finetune": "finetune_cmd",
    "predict": "predict_cmd",
    "evaluate": "evaluate_cmd",
    "export": "export_cmd",
    "figure": "figure_cmd",
    "demo": "demo_cmd",
    "reproduce": "reproduce_cmd",
}


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; keep its message to one line plus the usage hint."""

    def error(self, message: str) -> None:  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="p2g", description="Personalize-to-Generalize for multi-modal 3D medical images.")
    parser.add_argument("--version", action="version", version=f"p2gmed {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"p2gmed.cli.{module}")
        except ModuleNotFoundError as exc:  # a command not built yet must not break the others
            if exc.name != f"p2gmed.cli.{module}":
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        result = args.func(args)
    except InputError as exc:
        print(f"p2g {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("p2g: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
