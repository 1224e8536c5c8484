"""README's benchmark headlines are the committed measurements, rendered (bench/readme_headlines.py)."""
from __future__ import annotations

import json

from bench import readme_headlines as H


def test_readme_headlines_are_generated_from_the_results():
    text = H.README.read_text(encoding="utf-8")
    assert H.splice(text, H.render()) == text, "run: python -m bench.readme_headlines"


def test_a_measured_time_reaches_the_headlines(tmp_path):
    path = tmp_path / "runtimes.json"
    path.write_text(json.dumps({"cuda": {"w+": {"fast": 0.72, "balanced": 7.29}}}), encoding="utf-8")
    block = H.render(path)
    row = next(line for line in block.splitlines() if line.startswith("| **W+ optimization**"))
    assert "*fast* 0.7 s" in row and "*balanced* 7.3 s" in row and "not measured" in row  # CPU column empty
