"""The `cmkd` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("cmkd: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None = None) -> int:
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
    dat = sub.add_parser("datasets", help="say which real datasets are found under a folder")
    dat.add_argument("--root", required=True,
                     help="folder holding the datasets under their usual folder names")
    args = parser.parse_args(argv)
    if args.command == "reproduce":
        from cmkd.reproduce import reproduce

        return reproduce(args.profile, args.only, args.force)
    if args.command == "refresh-notebooks":
        from cmkd.reproduce import refresh_notebooks

        return refresh_notebooks(args.only)
    if args.command == "datasets":
        return datasets_status(args.root)
    return 2  # pragma: no cover


def datasets_status(root: str) -> int:
    """Print found / missing / malformed per real dataset, with what is wrong; exit status 0.

    A ``root`` that does not exist or is not a folder is said in one line on stderr (status 2).
    """
    from cmkd.data import EMBEDDED, status

    try:
        rows = status(root)
    except (FileNotFoundError, NotADirectoryError) as err:
        print(f"cmkd datasets: {err}", file=sys.stderr)
        return 2
    print(f"datasets under {root}:")
    for row in rows:
        print(f"  {row['name']:<11} {row['status']:<9} {row['folder']}  (parameter "
              f"{row['param']})")
        if row["status"] == "malformed":
            for problem in row["problems"]:
                print(f"      - {problem}")
    print(f"embedded (always available): {', '.join(EMBEDDED)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
