"""The batch's files when the CLI runs as several torchrun processes (:mod:`inversion.distributed`), or as one.

:class:`BatchTable` is what ``_run`` writes its progress through. One process: ``metrics.csv`` / ``summary.json``
after every photo, exactly as before. A rank of a torchrun launch: its part files after every photo (and once at
the start, so rank 0 always finds them), and at the end rank 0 merges every rank's parts into ``metrics.csv`` /
``summary.json`` in input order (photos a rank never reported are "not reached"), and all ranks agree on the
batch's exit status (0 when any photo of the whole batch is done, 1 when none, 130 when any rank was stopped).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from inversion import distributed as D
from inversion.cli.batch import CSV_COLUMNS, PARTIAL, STATUSES, _csv_rows, write_batch_files
from inversion.cli.photo import _write_json


def exit_status(interrupted: bool, any_done: bool) -> int:
    """The CLI's exit status: 130 stopped, 0 some photo done (now or earlier), 1 none."""
    return 130 if interrupted else (0 if any_done else 1)


class BatchTable:
    """Writes the batch's progress for this process and, at :meth:`finish`, the merged final files."""

    def __init__(self, out: Path, ranks: D.Ranks, entries: Sequence[dict[str, Any]], missing_inputs: int) -> None:
        self.out, self.ranks, self.entries, self.missing_inputs = out, ranks, entries, missing_inputs
        self.mine = D.shard(len(entries), ranks.launch)
        self.started = time.monotonic()

    @property
    def distributed(self) -> bool:
        return self.ranks.launch.distributed

    def staging(self) -> Path:
        """This process's staging folder for unfinished photos (one per rank, so ranks never clear each other's)."""
        root = self.out / PARTIAL
        return root / f"rank{self.ranks.launch.rank}" if self.distributed else root

    def counts(self, entries: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        return {**{s: sum(e["status"] == s for e in entries) for s in STATUSES}, "missing": self.missing_inputs}

    def _summary(self, summary: Mapping[str, Any], outcome: Mapping[str, Any],
                 entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {**summary, **outcome, "counts": self.counts(entries),
                "seconds": round(time.monotonic() - self.started, 3)}

    def flush(self, records: Mapping[str, Mapping[str, Any]], summary: Mapping[str, Any],
              outcome: Mapping[str, Any]) -> None:
        """This process's view now: the final files (one process) or its part files (a rank)."""
        if not self.distributed:
            write_batch_files(self.out, self.entries, records, self._summary(summary, outcome, self.entries))
            return
        rows = [(i, row) for i in self.mine if self.entries[i]["folder"] in records
                for row in _csv_rows(self.entries[i]["folder"], records[self.entries[i]["folder"]])]
        D.write_part(self.out, self.ranks, columns=CSV_COLUMNS, rows=rows,
                     entries=[(i, self.entries[i]) for i in self.mine], info=dict(outcome))

    def finish(self, records: Mapping[str, Mapping[str, Any]], summary: Mapping[str, Any],
               outcome: Mapping[str, Any]) -> tuple[dict[str, int], int, Optional[str]]:
        """Write the final files; returns ``(counts, exit status, note)`` for the whole batch (``note``: what went
        wrong with other ranks, for rank 0's message, else None)."""
        self.flush(records, summary, outcome)
        if not self.distributed:
            return self.counts(self.entries), exit_status(bool(outcome.get("interrupted")), bool(records)), None
        problem = self.ranks.barrier()
        result: tuple[dict[str, int], int] = ({}, 1)
        note = None
        if self.ranks.launch.is_main:
            entries, merged, note = self._merge(summary, problem)
            any_done = any(e["status"] in ("done", "already done") for e in entries)
            result = (self.counts(entries), exit_status(bool(merged["interrupted"]), any_done))
        counts, status = self.ranks.agree(result)
        return counts, status, note

    def _merge(self, summary: Mapping[str, Any], problem: str) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
        parts = D.read_parts(self.out, self.ranks, CSV_COLUMNS)
        world = self.ranks.launch.world_size
        entries = []
        for i, entry in enumerate(self.entries):
            got = parts.entries.get(i)
            if got is None:
                got = {**entry, "status": "not reached", "reason": f"process {D.owner(i, world)} did not report this photo"}
            entries.append(got)
        infos = [parts.infos[r] for r in sorted(parts.infos)]
        errors = [f"process {r}: {parts.infos[r]['error']}" for r in sorted(parts.infos) if parts.infos[r].get("error")]
        cut_short = bool(problem or parts.missing)  # a process died: its unfinished photos are "not reached"
        merged = {"interrupted": any(info.get("interrupted") for info in infos) or cut_short,
                  "error": "; ".join(errors) or None}
        extra = {"processes": world, "processes_missing": parts.missing}
        D.write_csv(self.out / "metrics.csv", CSV_COLUMNS, parts.rows)
        _write_json(self.out / "summary.json", {**self._summary(summary, merged, entries), **extra,
                                                 "photos": entries})
        D.remove_parts(self.out)
        shutil.rmtree(self.out / PARTIAL, ignore_errors=True)
        note = ""
        if cut_short:
            who = f"process(es) {', '.join(map(str, parts.missing))} stopped without reporting" if parts.missing \
                else "a process stopped before the end"
            note = f"{who} ({problem or 'no part file'}); run the same command again to finish their photos"
        return entries, merged, note
