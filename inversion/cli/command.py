"""``main(argv)``: parse, pick the device and family, run every photo, write the batch files, exit status."""
from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, TextIO

import torch

from editing import EDITS, EditError, get_edit
from inversion import distributed as D
from inversion import session as S
from inversion.cli.args import PROG, EditArg, UsageError, _presets, build_parser
from inversion.cli.inputs import _display, _sha256, collect_inputs, folder_names
from inversion.cli.loading import (
    FatalError, Loaded, ModelSetFactory, _locate_with_progress, _present_locally, default_model_sets, load_models,
)
from inversion.cli.batched import choose_batch, choose_fuse
from inversion.cli.loop import PhotoLoop
from inversion.cli.photo import FORMAT, _read_record
from inversion.cli.ranks import BatchTable
from inversion.cli.report import Reporter
from inversion.methods import METHODS, MethodRegistry
from inversion.models import ModelSet, choose_device
from inversion.result import Cancelled


def _device(choice: str) -> torch.device:
    try:
        return choose_device(choice)
    except ValueError as err:
        raise UsageError(str(err)) from None


def edit_for_family(name: str, models: ModelSet) -> str:
    """The registry edit that ``--edit name`` means for this model: the edit itself when it is made for the
    model's generator (or for any), else the model's own edit of that attribute (``smile`` on the built-in model is
    ``builtin_smile``; ``builtin_smile`` on FFHQ is ``smile``); :class:`UsageError` naming the valid edits otherwise."""
    kind = models.family.edit_kind
    prefixes = {f"{g}_" for e in EDITS for g in (e.generators or ())}
    base = next((name[len(p):] for p in prefixes if name.startswith(p)), name)
    for candidate in dict.fromkeys((name, f"{kind}_{base}", base)):
        try:
            spec = get_edit(candidate)
        except EditError:
            continue
        if spec.generators is None or kind in spec.generators:
            return candidate
    raise UsageError(f"the edit {name!r} is not made for the {models.family.label} model; for it use "
                     + ", ".join(n for _, n in S.edit_choices(models)))


def _resolve_edits(edits: Sequence[EditArg], models: ModelSet) -> list[dict[str, Any]]:
    """Edits checked against the family and the registry's ranges (without loading any model); ``name`` is the
    registry edit applied (:func:`edit_for_family`), ``key`` the file-name part (with the name as typed)."""
    out = []
    for e in edits:
        spec = get_edit(edit_for_family(e.name, models))
        lo, hi = spec.strength_range
        offset = spec.default_strength if e.offset is None else e.offset
        if not lo <= offset <= hi:
            raise UsageError(f"the strength of {e.name!r} must be between {lo:g} and {hi:g}")
        out.append({"name": spec.name, "component": e.component, "offset": float(offset), "key": e.key(offset)})
    keys = [r["key"] for r in out]
    if len(set(keys)) != len(keys):
        raise UsageError("the same edit is asked for twice")
    return out


class OutputConflict(UsageError):
    """``--out`` holds earlier results this run would replace (exit status 2, one line, nothing run)."""


def _differences(record: Mapping[str, Any], settings: Mapping[str, Any], sha: str) -> str:
    """How an earlier photo folder differs from this run, in a few words ("with other settings (methods e4e,psp,
    not e4e,w+)", "from another file")."""
    if record.get("source", {}).get("sha256") != sha:
        return "from another file of the same name"
    old = record.get("settings") or {}
    keys = [k for k in settings if old.get(k) != settings[k]]

    def show(value: Any) -> str:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return ",".join(value)
        if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            return ",".join(f"{k}={v}" for k, v in value.items())
        return str(value)

    if not keys:
        return "by this tool with the same settings"
    k = keys[0]
    more = f" and {len(keys) - 1} more setting(s)" if len(keys) > 1 else ""
    return f"with other settings ({k} {show(old.get(k))}, now {show(settings[k])}{more})"


def earlier_results(out: Path, files: Sequence[Path], names: Sequence[str], settings: Mapping[str, Any],
                    shas: dict[Path, str]) -> list[str]:
    """One description per photo whose folder in ``out`` holds an earlier run's results that this run would replace:
    made with other settings or from another source file. (Same settings and file: resumed, or redone with
    ``--no-resume``, as asked.) Source hashes are kept in ``shas`` for the run."""
    found = []
    for path, name in zip(files, names):
        record = _read_record(out / name)
        if record is None:
            continue
        try:
            shas[path] = sha = _sha256(path)
        except OSError:
            continue  # the run reports it as unreadable
        same = record.get("settings") == settings and record.get("source", {}).get("sha256") == sha
        if not same:
            found.append(_differences(record, settings, sha))
    return found


def main(argv: Optional[Sequence[str]] = None, *, model_sets: Optional[ModelSetFactory] = None,
         cancel: Optional[threading.Event] = None, stdout: Optional[TextIO] = None,
         stderr: Optional[TextIO] = None, methods: MethodRegistry = METHODS) -> int:
    """Run the command line; returns the exit status. ``model_sets`` (tests) replaces :func:`default_model_sets`;
    ``cancel`` stops the batch cleanly when set (Ctrl-C sets it; a second Ctrl-C stops at once); ``methods``: the
    method registry the choices come from."""
    out_stream, err_stream = stdout or sys.stdout, stderr or sys.stderr
    parser = build_parser(methods)
    try:
        with contextlib.redirect_stdout(out_stream), contextlib.redirect_stderr(err_stream):
            args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or bad arguments (2)
        return int(exc.code or 0)
    cancel = cancel or threading.Event()
    reporter = Reporter(out_stream, err_stream, quiet=args.quiet)
    handled, previous = False, None
    if threading.current_thread() is threading.main_thread():
        def on_sigint(signum, frame):  # noqa: ARG001 - signal handler signature
            if cancel.is_set():
                raise KeyboardInterrupt
            cancel.set()
            reporter.line("stopping after the current step (Ctrl-C again to stop at once) ...")
        previous, handled = signal.signal(signal.SIGINT, on_sigint), True
    term = None
    try:
        launch = D.detect_launch()  # torchrun's environment, else a single process
        if handled and launch.distributed:  # torchrun stops the other processes with SIGTERM when one fails
            term = signal.signal(signal.SIGTERM, on_sigint)
        device = D.rank_device(launch, _device(args.device))
        with D.open_ranks(launch, device) as ranks:
            return _run(args, model_sets or default_model_sets, cancel, reporter, ranks, methods)
    except UsageError as err:
        reporter.close()
        if not isinstance(err, OutputConflict):
            parser.print_usage(err_stream)
        print(f"{PROG}: error: {err}", file=err_stream)
        return 2
    except D.LaunchError as err:
        reporter.line(f"error: {_display(err)}")
        return 1
    finally:
        reporter.close()
        if handled:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        if term is not None:
            signal.signal(signal.SIGTERM, term)


def _run(args: argparse.Namespace, factory: ModelSetFactory, cancel: threading.Event, reporter: Reporter,
         ranks: D.Ranks, registry: MethodRegistry = METHODS) -> int:
    """The batch for this process: every photo, or this rank's share of them under torchrun."""
    if args.face < 0:
        raise UsageError("--face must be 0 or more")
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {_display(out)} is a file, not a folder")
    device = ranks.device
    main_rank = ranks.launch.is_main
    sets = dict(factory(device, _locate_with_progress(reporter)))
    family = args.family
    if family == "auto":
        family = S.default_family(sets, _present_locally(sets))
    if family not in sets:
        raise UsageError(f"unknown model family {family!r}; choose auto or one of {', '.join(sets)}")
    models = sets[family]
    presets = _presets(args.preset, args.methods, "balanced" if device.type == "cuda" else "fast", registry)
    edits = _resolve_edits(args.edit, models)
    settings = {"format": FORMAT, "family": models.family.name, "methods": list(args.methods), "presets": presets,
                "seed": int(args.seed), "face": int(args.face), "edits": edits, "paste_back": bool(args.paste_back)}
    if args.all_faces:  # only then, so folders finished by earlier runs keep matching their settings
        settings["all_faces"] = True

    for e, wanted in zip(args.edit, edits):
        if wanted["name"] != e.name:
            reporter.info(f"note: --edit {e.name} means {wanted['name']} ({get_edit(wanted['name']).label}) "
                          f"for the {models.family.label}")

    files, problems = collect_inputs(args.inputs, recursive=args.recursive, exclude=out)
    if problems:  # a mistyped path is a bad argument: say so before anything runs
        raise UsageError("; ".join(p.removeprefix("skip ") for p in problems))
    if not files:
        if main_rank:
            reporter.line("nothing to do: no image files found in " + ", ".join(_display(i) for i in args.inputs))
        return 1
    names = folder_names(files)
    shas: dict[Path, str] = {}
    conflicts = earlier_results(out, files, names, settings, shas)
    if conflicts and not args.overwrite:
        raise OutputConflict(
            f"{_display(out)} already holds results of {len(conflicts)} of these photos made {conflicts[0]}"
            f"{' (and others)' if len(conflicts) > 1 else ''}; nothing was run or replaced: choose another --out "
            "to keep both, or add --overwrite to replace them")
    if conflicts:
        reporter.line(f"replacing the earlier results of {len(conflicts)} photo(s) in {_display(out)} "
                      f"(made {conflicts[0]}{', ...' if len(conflicts) > 1 else ''}) as --overwrite asks")
    out.mkdir(parents=True, exist_ok=True)
    entries = [{"source": _display(f), "folder": n, "status": "not reached", "reason": ""}
               for f, n in zip(files, names)]
    records: dict[str, dict[str, Any]] = {}
    table = BatchTable(out, ranks, entries, len(problems))
    summary = {"tool": "inversion.cli", "format": FORMAT, "settings": settings, "device": str(device),
               "model": models.family.label, "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    outcome: dict[str, Any] = {"interrupted": False, "error": None}
    loaded: list[Loaded] = []

    def flush() -> None:
        table.flush(records, summary, outcome)

    def ensure_models() -> Loaded:
        if not loaded:
            reporter.progress(0.0, "loading models")
            ready = load_models(models, settings["methods"], registry)
            for note in ready.notes:
                reporter.line(f"note: {_display(note)}")
            if not ready.methods:
                raise FatalError("none of the chosen methods can run")
            for e in args.edit:  # component ranges depend on the loaded generator
                top = S.edit_control(e.name, models).component_max
                if e.component is not None and top is not None and e.component > top:
                    raise UsageError(f"the component of {e.name!r} must be 0..{top} for this model")
            loaded.append(ready)
        return loaded[0]

    def on_progress(method: str, step: int, total: int, metrics: Mapping[str, float]) -> None:
        methods = loaded[0].methods if loaded else settings["methods"]
        done = methods.index(method) if method in methods else 0
        loss = metrics.get("loss") if metrics else None
        extra = f" loss {loss:.4f}" if isinstance(loss, (int, float)) and math.isfinite(loss) else ""
        reporter.progress((done + (step / total if total else 0.0)) / len(methods),
                          f"{registry[method].label} {step}/{total}{extra}", key=method)

    reporter.info(f"{len(files)} file(s); {models.family.label}; methods "
                  + ", ".join(m if not registry[m].has_presets else f"{m} ({p})" for m, p in presets.items())
                  + f"; device {device}; output {_display(out)}"
                  + (f"; process {ranks.launch.rank} of {ranks.launch.world_size}: {len(table.mine)} file(s)"
                     if table.distributed else ""))
    if table.distributed:
        flush()  # the part files exist from the start: rank 0 always finds this rank's share
    batch = choose_batch(args.batch, device, models.family.size, all_faces=bool(args.all_faces))
    mine = list(table.mine)
    fuse = choose_fuse(device, len(mine))
    if fuse:
        reporter.info(f"{len(mine)} photos: the optimization steps are compiled first (about a minute, once)")
    if batch > 1:
        together = [registry[m].label for m in settings["methods"] if registry[m].run_batch is not None]
        reporter.info(f"up to {batch} photos at a time through {', '.join(together) or 'no method'}; "
                      "the other methods and the edits run photo by photo")

    loop = PhotoLoop(out=out, files=files, entries=entries, records=records, shas=shas, mine=mine, settings=settings,
                     models=models, registry=registry, reporter=reporter, cancel=cancel, staging=table.staging,
                     ensure_models=ensure_models, flush=flush, on_progress=on_progress, edits=list(args.edit),
                     batch=batch, fuse=fuse, resume=not args.no_resume)
    try:
        loop.run()
    except (Cancelled, KeyboardInterrupt):
        outcome["interrupted"] = True
        reporter.line("stopped: finished photos are kept; run the same command again to go on")
    except FatalError as err:
        outcome["error"] = str(err)
        reporter.line(f"error: {_display(err)}")
    finally:
        shutil.rmtree(table.staging(), ignore_errors=True)
    tally, status, note = table.finish(records, summary, outcome)
    if note:
        reporter.line(f"error: {_display(note)}")
    if main_rank:
        reporter.line(", ".join(f"{n} {s}" for s, n in tally.items() if n) + f" -> {_display(out)}",
                      stream=reporter.out)
    return status
