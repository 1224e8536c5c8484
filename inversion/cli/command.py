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
from typing import Any, Callable, Mapping, Optional, Sequence, TextIO

import torch

from editing import EDITS, EditError, get_edit
from inversion import distributed as D
from inversion import session as S
from inversion.cli.args import PROG, EditArg, UsageError, _presets, build_parser
from inversion.cli.inputs import _display, _sha256, collect_inputs, folder_names
from inversion.cli.loading import (
    FatalError, Loaded, ModelSetFactory, _locate_with_progress, _present_locally, default_model_sets, load_models,
)
from inversion.cli.batched import batched_results, choose_batch, choose_fuse
from inversion.cli.photo import (
    FORMAT, PhotoSkipped, _check_cancel, _publish, _read_record, finish_photo, invert_photo, prepare_photo,
)
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

    def attempt(path: Path, entry: dict[str, Any], work: Callable[[], Any]) -> Any:
        """``work()`` for one photo; a photo-level failure marks its entry (skipped/failed) and gives None."""
        try:
            return work()
        except PhotoSkipped as err:
            entry.update(status="skipped", reason=str(err))
            reporter.line(f"skip {_display(path)}: {_display(err)}")
        except (Cancelled, KeyboardInterrupt, FatalError, UsageError):
            raise
        except Exception as err:  # noqa: BLE001 - one bad photo must not end the batch
            entry.update(status="failed", reason=f"{type(err).__name__}: {err}")
            reporter.line(f"skip {_display(path)}: unexpected error ({type(err).__name__}: {_display(err)})")
        return None

    def pending(path: Path, entry: dict[str, Any]) -> Optional[str]:
        """The photo's sha256 when it is still to do; None when it was done before or cannot be read."""
        try:
            sha = shas.get(path) or _sha256(path)
        except OSError as err:
            entry.update(status="skipped", reason=f"cannot read the file ({err.strerror or err})")
            reporter.line(f"skip {_display(path)}: {entry['reason']}")
            return None
        record = None if args.no_resume else _read_record(out / entry["folder"])
        if record is not None and record.get("settings") == settings and \
                record.get("source", {}).get("sha256") == sha:
            entry.update(status="already done")
            records[entry["folder"]] = record
            reporter.info(f"skip {_display(path)}: already done")
            return None
        return sha

    def write(path: Path, entry: dict[str, Any], make: Callable[[Path], dict[str, Any]]) -> None:
        """Make the photo's files in staging, move them into place, and record it as done."""
        final, staging = out / entry["folder"], table.staging() / entry["folder"]
        shutil.rmtree(staging, ignore_errors=True)

        def work() -> dict[str, Any]:
            made = make(staging)
            _publish(staging, final)
            return made
        try:
            record = attempt(path, entry, work)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if record is None:
            return
        entry.update(status="done")
        records[entry["folder"]] = record
        for note in record["warnings"]:
            reporter.line(f"note {_display(path)}: {_display(note)}")
        took = sum(float(m["metrics"]["seconds"] or 0) for m in record["methods"].values())
        reporter.info(f"done {_display(path)} -> {_display(final)} ({took:.1f} s)", stream=reporter.out)
        flush()

    common = dict(settings=settings, edits=args.edit, on_progress=on_progress, registry=registry, cancel=cancel,
                  on_stage=lambda text: reporter.progress(1.0, text), fuse=fuse)
    try:
        for first in range(0, len(mine), batch):
            group = []  # (index in mine, path, entry, sha256, prepared photo or None = the one-photo path)
            for k in range(first, min(first + batch, len(mine))):
                path, entry = files[mine[k]], entries[mine[k]]
                _check_cancel(cancel)
                sha = pending(path, entry)
                if sha is None:
                    continue
                prepared = None
                if batch > 1:
                    prepared = attempt(path, entry, lambda: prepare_photo(path, settings=settings))
                    if prepared is None:
                        continue
                group.append((k, path, entry, sha, prepared))
            extras: list[tuple[dict[str, Any], Any]] = [({}, None)] * len(group)
            if len(group) > 1:
                loaded_now = ensure_models()
                reporter.photo(group[0][0], len(mine), f"{len(group)} photos together "
                               f"({group[0][0] + 1}-{group[-1][0] + 1})")
                results, caches = batched_results(
                    models, loaded_now.methods, [S.model_input(g[4].state, models.family.size) for g in group],
                    presets=settings["presets"], seed=settings["seed"], cancel=cancel, on_progress=on_progress,
                    registry=registry, on_note=lambda text: reporter.line(f"note: {_display(text)}"), fuse=fuse)
                extras = list(zip(results, caches))
            for (k, path, entry, sha, prepared), (done_before, cache) in zip(group, extras):
                _check_cancel(cancel)
                reporter.photo(k, len(mine), _display(path.name))
                if prepared is None:
                    def make(staging: Path, path: Path = path, sha: str = sha) -> dict[str, Any]:
                        return invert_photo(models, path, staging, source_sha256=sha, ensure_models=ensure_models,
                                            **common)
                else:
                    def make(staging: Path, prepared: Any = prepared, sha: str = sha, done_before: Any = done_before,
                             cache: Any = cache) -> dict[str, Any]:
                        return finish_photo(models, prepared, staging, source_sha256=sha, loaded=ensure_models(),
                                            precomputed=done_before, starts=cache, **common)
                write(path, entry, make)
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
