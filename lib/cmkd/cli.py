"""The `cmkd` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cmkd", description="crossmodal KD study")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="run notebooks with papermill and write REPORT.md")
    rep.add_argument("--profile", default="default", choices=("smoke", "default", "paper"),
                     help="params/<profile>/ and reports/<profile>/ (default: default)")
    rep.add_argument("--only", nargs="+", metavar="NN",
                     help="notebook numbers (01 02 ...) or names; default: all")
    rep.add_argument("--force", action="store_true",
                     help="rerun notebooks whose inputs are unchanged since their last success")
    ref = sub.add_parser("refresh-notebooks",
                         help="regenerate stored notebook outputs (nbval baseline) from smoke")
    ref.add_argument("--only", nargs="+", metavar="NN")
    args = parser.parse_args(argv)
    if args.command == "reproduce":
        from cmkd.reproduce import reproduce

        return reproduce(args.profile, args.only, args.force)
    if args.command == "refresh-notebooks":
        from cmkd.reproduce import refresh_notebooks

        return refresh_notebooks(args.only)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
