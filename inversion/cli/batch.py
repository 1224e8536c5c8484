"""The batch's own files: ``metrics.csv`` (one row per photo and method) and ``summary.json``."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from inversion.cli.photo import METRIC_KEYS, _write_json


CSV_COLUMNS = ("photo", "source", "family", "method", "label", "preset", *METRIC_KEYS, "optimized_on")
"""``optimized_on``: "MSE + LPIPS", "MSE only" (the LPIPS network was missing) or empty (encoders)."""
PARTIAL = ".partial"
STATUSES = ("done", "already done", "skipped", "failed", "not reached")


def _csv_rows(name: str, record: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for method, entry in record.get("methods", {}).items():
        m = entry.get("metrics", {})
        rows.append([name, record.get("source", {}).get("path", ""), record.get("model", {}).get("family", ""),
                     method, entry.get("label", ""), entry.get("preset", ""),
                     *("" if m.get(k) is None else repr(float(m[k])) for k in METRIC_KEYS),
                     entry.get("optimized_on", "")])
    return rows


def write_batch_files(out: Path, entries: Sequence[Mapping[str, Any]], records: Mapping[str, Mapping[str, Any]],
                      summary: Mapping[str, Any]) -> None:
    """``metrics.csv`` (one row per finished photo and method) and ``summary.json``, replaced atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        if entry["folder"] in records:
            writer.writerows(_csv_rows(entry["folder"], records[entry["folder"]]))
    tmp = out / "metrics.csv.tmp"
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, out / "metrics.csv")
    _write_json(out / "summary.json", {**summary, "photos": list(entries)})
