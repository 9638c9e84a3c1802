"""Command-line interface: the only module that parses arguments or calls sys.exit."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convprop", description="Convolutional networks from first principles.")
    parser.add_argument("--version", action="version", version=f"convprop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train a digit recogniser (not built yet)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        print("convprop train: not built yet (see issue 4).", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
