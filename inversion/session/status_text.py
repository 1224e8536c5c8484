"""Plain status text for the visitor: which methods are ready, each file's state, the family banner."""
from __future__ import annotations

from typing import Mapping, Optional

from inversion.checkpoints import FileStatus
from inversion.methods import METHODS, MethodRegistry
from inversion.models import ModelSet
from inversion.pieces import METRIC_PIECES
from inversion.session.availability import _piece_files, method_status, piece_present
from inversion.session.state import FilePresent


def _file_line(st: FileStatus) -> str:
    if st.state == "present":
        return f"`{st.name}` ready"
    if st.state == "downloading":
        if st.bytes_total:
            share = 100 * st.bytes_done / st.bytes_total
            return f"`{st.name}` downloading {share:.0f}% of {st.bytes_total / 1e6:,.0f} MB"
        return f"`{st.name}` downloading ({st.bytes_done / 1e6:,.0f} MB so far)"
    if st.state == "failed":
        return f"`{st.name}` **failed**: {st.message}"
    return f"`{st.name}` missing: {st.message}"


def status_markdown(models: ModelSet, file_present: FilePresent,
                    statuses: Optional[Mapping[str, FileStatus]] = None, methods: MethodRegistry = METHODS) -> str:
    """Plain status for the visitor: which methods can run with this family, and each needed file's state."""
    status = method_status(models, file_present, methods)
    ready = [methods[m].label for m, (ok, _) in status.items() if ok]
    waiting = [reason for ok, reason in status.values() if not ok]
    lines = [f"**{models.family.label}** — methods ready: {', '.join(ready) if ready else 'none yet'}."]
    if waiting:
        lines.append("Not yet: " + "; ".join(waiting) + ".")
    metric_pieces = [p for p in METRIC_PIECES if p in methods.pieces and _piece_files(models, p, methods)]
    extras = [p for p in metric_pieces if not piece_present(models, p, file_present, methods)]
    if extras:
        lines.append("Metrics not available yet: " + ", ".join(methods.piece_label(p) for p in extras)
                     + " (shown as empty).")
    if "lpips" in extras:
        mse_only = [m.label for m in methods.values() if "lpips" in m.optional]
        if mse_only:
            lines.append(f"Without LPIPS, {', '.join(mse_only)} optimize on MSE alone (no perceptual loss).")
    pieces = [*methods.pieces]
    names = [n for piece in pieces for n in _piece_files(models, piece, methods) if n in (statuses or {})]
    if names:
        lines.append("Files:\n" + "\n".join(f"- {_file_line(statuses[n])}" for n in dict.fromkeys(names)))
    return "\n\n".join(lines)


def family_banner(model_sets: Mapping[str, ModelSet], chosen: str, file_present: FilePresent,
                  statuses: Optional[Mapping[str, FileStatus]] = None) -> str:
    """A one-line warning when the FFHQ generator is missing (and what the app uses instead), else ''."""
    ffhq = model_sets.get("ffhq")
    if ffhq is None or piece_present(ffhq, "generator", file_present):
        return ""
    states = {(statuses or {})[n].state for n in ffhq.family.generator_files if n in (statuses or {})}
    if states & {"downloading", "missing"}:  # "missing": queued in the downloader
        why, then = "still downloading", "meanwhile"
    elif states and states <= {"failed"}:
        why, then = "not available (the download failed; see *Model files and status*)", "instead"
    else:
        why, then = "not available yet", "meanwhile"
    others = [m for k, m in model_sets.items() if k != "ffhq" and piece_present(m, "generator", file_present)]
    if others:
        return f"The FFHQ 1024 weights are {why}, so the app works on **{others[0].family.label}** {then}."
    return f"The FFHQ 1024 weights are {why}, and no other model is present: inversion cannot run yet."
