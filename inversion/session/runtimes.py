"""Run times the visitor reads, taken from measurements only: ``bench/results/runtimes.json``.

Schema (written by the benchmark): ``{"<device kind>": {"<method>": {"<preset>": seconds}}}``, device kind
``"cpu"`` or ``"cuda"``; methods without presets use the preset ``"default"``. Anything missing reads "not
measured" — no number here is typed by hand.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Optional, Union

from inversion.methods import METHODS, MethodRegistry

Runtimes = Mapping[str, Mapping[str, Mapping[str, float]]]
RUNTIMES_FILE = Path(__file__).resolve().parents[2] / "bench" / "results" / "runtimes.json"
DEVICE_KINDS = (("cpu", "CPU"), ("cuda", "GPU"))
NOT_MEASURED = "not measured"


def load_runtimes(path: Union[str, Path, None] = None) -> dict[str, dict[str, dict[str, float]]]:
    """The measured seconds in ``path`` (default :data:`RUNTIMES_FILE`); ``{}`` when absent or unreadable.
    Entries that are not finite, non-negative numbers are left out."""
    try:
        data = json.loads(Path(path or RUNTIMES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for kind, methods in (data.items() if isinstance(data, dict) else ()):
        for method, presets in (methods.items() if isinstance(methods, dict) else ()):
            for preset, seconds in (presets.items() if isinstance(presets, dict) else ()):
                if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds) \
                        and seconds >= 0:
                    out.setdefault(str(kind), {}).setdefault(str(method), {})[str(preset)] = float(seconds)
    return out


def format_seconds(seconds: float) -> str:
    """``36 ms``, ``0.4 s``, ``12 s``, ``3.5 min``, ``1.2 h``."""
    if seconds < 0.1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def measured(runtimes: Runtimes, kind: str, method: str, preset: str) -> Optional[float]:
    """Measured seconds for (device kind, method, preset), or ``None``."""
    value = runtimes.get(kind, {}).get(method, {}).get(preset)
    return float(value) if value is not None else None


def runtime_cell(runtimes: Runtimes, kind: str, method: str, presets: tuple[str, ...]) -> str:
    """One table cell: the measured time of each preset (e.g. ``fast 12 s · balanced 40 s``)."""
    if all(measured(runtimes, kind, method, p) is None for p in presets):
        return NOT_MEASURED
    parts = []
    for preset in presets:
        seconds = measured(runtimes, kind, method, preset)
        text = format_seconds(seconds) if seconds is not None else NOT_MEASURED
        parts.append(text if len(presets) == 1 else f"*{preset}* {text}")
    return " · ".join(parts)


def methods_help_markdown(runtimes: Runtimes, methods: MethodRegistry = METHODS, *,
                          source: str = "bench/results/runtimes.json") -> str:
    """The app's "what the methods do" table: one row per registered method, run times from ``runtimes``."""
    head = "| method | how | " + " | ".join(f"{label} (measured)" for _, label in DEVICE_KINDS) + " |"
    rows = [head, "|" + "---|" * (2 + len(DEVICE_KINDS))]
    for key, m in methods.items():
        cells = [runtime_cell(runtimes, kind, key, m.presets) for kind, _ in DEVICE_KINDS]
        rows.append(f"| **{m.label}** | {m.how or m.description} | " + " | ".join(cells) + " |")
    where = (f"Times are seconds per photo measured by the benchmark (`{source}`)"
             if runtimes else f"No run times are measured yet (`{source}` is missing)")
    return "\n".join(rows) + "\n\n" + where + "; *not measured* means no measurement is recorded.\n"
