"""README's benchmark headlines, generated from the committed results (never typed by hand).

``python -m bench.readme_headlines`` rewrites the block between ``<!-- headlines:start -->`` and
``<!-- headlines:end -->`` in README.md from ``bench/results/runtimes.json`` (seconds per photo per method and
preset, as the app shows them) and names the measurement files behind it; ``--check`` exits 1 when README is
out of date (the test suite runs the same comparison).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from inversion.session.runtimes import RUNTIMES_FILE, load_runtimes, methods_help_markdown

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- headlines:start -->", "<!-- headlines:end -->"
SOURCES = ("bench/results/h200_summary.md", "bench/results/h200_ttq.md", "bench/results/cpu.md",
           "bench/results/throughput_h200.md")


def render(runtimes_file: Path = RUNTIMES_FILE) -> str:
    """The generated block (without the markers)."""
    table = methods_help_markdown(load_runtimes(runtimes_file))
    present = [s for s in SOURCES if (ROOT / s).exists()]
    more = ("Against the original code on the same machine, and the goals of each speed measure: "
            + ", ".join(f"`{s}`" for s in present) + ".") if present else ""
    return "\n" + table + ("\n" + more + "\n" if more else "") + "\n"


def splice(text: str, block: str) -> str:
    """``text`` with the part between the markers replaced by ``block``; ``ValueError`` without markers."""
    if START not in text or END not in text:
        raise ValueError(f"README.md has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + START + block + END + tail


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.readme_headlines", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is not what the results say")
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    new = splice(text, render())
    if args.check:
        if new != text:
            print("README.md headlines differ from bench/results/runtimes.json: run python -m bench.readme_headlines")
            return 1
        return 0
    README.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
