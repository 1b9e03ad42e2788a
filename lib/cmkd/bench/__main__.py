"""`python -m cmkd.bench [name ...]`: run the benchmarks (all by default), write BENCH.md."""

from __future__ import annotations

import argparse
import importlib

import pandas as pd
import torch

from cmkd.bench import BENCHMARKS, DEVICE_BENCHMARKS
from cmkd.reporting import atomic_write_text, markdown_table, repo_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cmkd.bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--device", default="cpu",
                        help=f"'cpu' (default) or 'cuda'; only for {', '.join(DEVICE_BENCHMARKS)}")
    args = parser.parse_args(argv)
    names = args.names or (list(BENCHMARKS) if args.device == "cpu" else list(DEVICE_BENCHMARKS))
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    if args.device != "cpu":
        if not args.device.startswith("cuda") or not torch.cuda.is_available():
            parser.error(f"--device {args.device!r}: only 'cpu' or an available 'cuda' device")
        cpu_only = [n for n in names if n not in DEVICE_BENCHMARKS]
        if cpu_only:
            parser.error(f"--device {args.device}: {', '.join(cpu_only)} run on the CPU only")
    sections = [f"# cmkd benchmarks\n\ntorch {torch.__version__}, "
                f"{torch.get_num_threads()} threads. Speed-up: the reference's time over ours.\n"]
    for name in names:
        title = BENCHMARKS[name]
        print(f"benchmark: {title} ...", flush=True)
        module = importlib.import_module(f"cmkd.bench.{name}")
        rows = module.run(device=args.device) if args.device != "cpu" else module.run()
        table = pd.DataFrame(rows)
        if "seconds" in table:  # sub-millisecond timings would round to 0.00
            table = table.rename(columns={"seconds": "ms"})
            table["ms"] = table["ms"] * 1000
        text = markdown_table(table)
        print(text, flush=True)
        sections.append(f"## {title}\n\n{text}\n")
    out = repo_root() / "reports" / "bench" / ("BENCH.md" if args.device == "cpu"
                                                else f"BENCH_{args.device.replace(':', '')}.md")
    atomic_write_text(out, "\n".join(sections))
    print(f"written: {out.relative_to(repo_root())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
