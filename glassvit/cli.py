"""The `glassvit` command. Each subcommand lives in its own module with `configure(parser)` and `run(args) -> int`.

User errors (GlassViTError) print one line to stderr and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import GlassViTError

# subcommand -> (module, one-line help); modules are imported only when their command runs
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("glassvit.commands.quickstart", "the zoo in a few minutes, offline, on bundled data"),
    "list": ("glassvit.commands.zoo", "list zoo models matching a pattern"),
    "info": ("glassvit.commands.zoo", "show a zoo model's spec, size, input and paper"),
    "train": ("glassvit.commands.train", "fine-tune a zoo model on your images (folder, manifest, DigitScenes)"),
    "push": ("glassvit.commands.push", "upload a saved model or training run to the Hugging Face Hub"),
    "eval": ("glassvit.commands.eval", "accuracy and explanation quality on annotated data (JSON + Markdown)"),
    "explain": ("glassvit.commands.explain", "figures of what a model looked at, and why, for image files"),
    "report": ("glassvit.commands.report", "train every head family on DigitScenes and tabulate accuracy and explanations"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glassvit", description="A model zoo of interpretable Vision Transformers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        configure = getattr(importlib.import_module(module), f"configure_{name}")
        configure(p)
        p.set_defaults(_module=module, _run=f"run_{name}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(getattr(importlib.import_module(args._module), args._run)(args) or 0)
    except GlassViTError as e:
        print(f"glassvit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"glassvit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
