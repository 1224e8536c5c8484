"""Gradio app: compare StyleGAN2 inversion methods side by side, edit every result, paste back, download.

UI only: the work is done by :mod:`inversion.session` (per-visitor logic) and the packages below it.
``build_demo()`` builds the ``gr.Blocks``; nothing is downloaded or loaded at import: the weight downloader
starts in :func:`main` (or on the first page load) and models load on first use.

API (``gradio_client``): ``/align``, ``/invert``, ``/stop``, ``/edit``, ``/paste_back``, ``/export``, ``/status``.

Two lanes (:mod:`inversion.scheduling`): short work (align, the encoders, edits, paste-back, export) runs in the
``short`` concurrency group and never waits behind the optimizing methods, which queue in the app's long lane (bounded
slots, visible position and estimated start, one long run per visitor). Stop sets the run's stop flag (a file, so it
reaches a ``spaces.GPU`` worker process too), polled between optimization steps.
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Mapping, Optional

import gradio as gr
import pandas as pd

from editing import EditError, get_edit
from inversion import session as S
from inversion import group as G
from inversion.before_after import COMPARE_SIZE, before_after
from inversion.align import AlignmentError, PredictorNotFoundError
from inversion.checkpoints import BackgroundDownloader, CheckpointError, CheckpointMissingError
from inversion.methods import METHODS, MethodRegistry, StartCache
from inversion.lanes import CONFIRM_OVER_S, LaneError, LanePlan, RunTimes
from inversion.models import ModelSet, choose_device
from inversion.result import Cancelled
from inversion.scheduling import Held, Lanes, Queued, Started, check_visitor, run_in_lanes

try:  # Hugging Face ZeroGPU; optional
    import spaces  # type: ignore
except ImportError:  # pragma: no cover - depends on the host
    spaces = None

log = logging.getLogger("stylegan2_app")

ROOT = Path(__file__).resolve().parent
EXAMPLES = [str(ROOT / "examples" / "grace_hopper.jpg"), str(ROOT / "examples" / "astronaut.png")]
MAX_FILE_SIZE = "25mb"
STATE_TTL_S = 3600
PTI_KEEP = 4
"""PTI-tuned generators kept alive for editing, over all visitors (an FFHQ copy is ~120 MB)."""
PLAIN_ERRORS = (AlignmentError, S.SessionError, EditError, CheckpointError, PredictorNotFoundError, LaneError)
OOPS = "Something went wrong on the server (details in the server log). Please try again."

INTRO = """
# StyleGAN2 face inversion — compare the methods

**1 Photo** → the face is found and aligned like FFHQ. **2 Invert** → each ticked method looks for the StyleGAN2
code that redraws that face; the results appear side by side with their scores. **3 Edit & download** → every
result is edited the same way (methods are compared on editing too), pasted back into your photo, and can be downloaded.
"""

TRADEOFF_HELP = """
**Distortion vs editability.** The more freedom a method has (W+ codes, a tuned generator), the closer it redraws
the photo (low MSE / LPIPS, high identity similarity) — but codes far from what the generator saw in training edit
less reliably. *Code spread* (how much the per-layer codes differ; 0 = a single W code) is the editability proxy
plotted against distortion below. Without the LPIPS weights, the optimizing methods use MSE alone (the app says so).
"""


def methods_help(methods: MethodRegistry = METHODS) -> str:
    """The "what the methods do" text: one row per registered method, run times from the benchmark's measurements
    (``bench/results/runtimes.json``; "not measured" where it has none)."""
    return S.methods_help_markdown(S.load_runtimes(), methods) + TRADEOFF_HELP


# ------------------------------------------------------------------------------------------ helpers

def _plain_errors(fn: Callable) -> Callable:
    """Domain errors -> gr.Error(message); anything unexpected -> a generic gr.Error, logged with traceback."""
    def translate(err: BaseException) -> BaseException:
        if isinstance(err, gr.Error):
            return err
        if isinstance(err, PLAIN_ERRORS):
            return gr.Error(str(err), print_exception=False)
        log.exception("unexpected error in %s", fn.__name__)
        return gr.Error(OOPS, print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - mapped to a visitor message
                raise translate(err) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - mapped to a visitor message
            raise translate(err) from None
    return wrapper


def _on_gpu(fn: Callable, duration: int) -> Callable:
    """``spaces.GPU(duration=...)`` on Hugging Face ZeroGPU, the function itself elsewhere."""
    return spaces.GPU(duration=duration)(fn) if spaces is not None else fn


def _state(state: Optional[S.VisitorState]) -> S.VisitorState:
    return state if state is not None else S.new_state()


def _upload_path(payload: Any) -> Optional[str]:
    """The server-side path of an uploaded image (the event runs with preprocess=False)."""
    if payload is None:
        return None
    if isinstance(payload, dict):
        return payload.get("path")
    if isinstance(payload, (str, os.PathLike)):
        return str(payload)
    return getattr(payload, "path", None)


def _metrics_frame(state: S.VisitorState) -> pd.DataFrame:
    return pd.DataFrame(S.metrics_rows(state.results), columns=list(S.METRIC_COLUMNS), dtype=object)


def _plot(state: S.VisitorState) -> pd.DataFrame:
    _, points = S.tradeoff_points(state.results)
    frame = pd.DataFrame(points, columns=["method", "distortion", "code_spread"])
    return frame.astype({"method": str, "distortion": float, "code_spread": float})


def _plot_update(state: S.VisitorState) -> gr.ScatterPlot:
    """The trade-off plot with padded limits (points at the very edge are hard to see) and its axis name."""
    name, points = S.tradeoff_points(state.results)
    return gr.ScatterPlot(value=_plot(state), x_lim=S.padded_range([p["distortion"] for p in points], floor=0.0),
                          y_lim=S.padded_range([p["code_spread"] for p in points], floor=0.0),
                          x_title=f"distortion ({name}) — lower is closer")


def _method_dropdown(state: Optional[S.VisitorState]) -> gr.Dropdown:
    done = list(state.results) if state is not None else []
    return gr.Dropdown(choices=[(S.result_label(state, m), m) for m in done], value=done[0] if done else None)


# ------------------------------------------------------------------------------------------ the Blocks

def default_model_sets(device: Any, locate: Callable[[str], Path]) -> dict[str, ModelSet]:
    """FFHQ 1024 (Hub weights) and the built-in 128 px set, both lazily loaded."""
    return {name: ModelSet(name, device=device, locate=locate) for name in ("ffhq", "builtin")}


def _not_here(name: str) -> Path:
    raise CheckpointMissingError(f"The weight file {name} is not downloaded yet (see the status panel).")


def download_order(methods: MethodRegistry = METHODS) -> tuple[str, ...]:
    """The files the app downloads, in order: landmarks, then what the registered methods need (run order),
    then the metric models (:func:`inversion.session.download_order`)."""
    return S.download_order(default_model_sets("cpu", _not_here), methods)


DOWNLOAD_ORDER = download_order()


def preset_parameter(method_key: str) -> str:
    """The ``/invert`` argument name of a method's preset (``preset_w``, ``preset_wplus``, ``preset_pti``)."""
    return f"preset_{S.safe_name(method_key)}"


def _all_faces_signature(methods: MethodRegistry) -> inspect.Signature:
    """``(family, methods, preset_<m>..., seed, edit_name, strength, component, method, state, request)``."""
    names = ["family", "methods", *(preset_parameter(m.key) for m in methods.with_presets()), "seed", "edit_name",
             "strength", "component", "method", "state"]
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request))
    return inspect.Signature(params)


def _invert_signature(methods: MethodRegistry) -> inspect.Signature:
    """``(family, methods, preset_<m>... (one per method with presets, run order), seed, allow_long, state,
    request, progress)``; ``allow_long`` (optional for API clients) confirms a CPU run estimated past 5 minutes."""
    names = ["family", "methods", *(preset_parameter(m.key) for m in methods.with_presets()), "seed", "allow_long",
             "state"]
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request))
    params.append(inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress()))
    return inspect.Signature(params)


@dataclass
class _App:
    """What the handlers share: the model sets (family -> ModelSet, first = preferred), the weight downloader (or
    None), the PTI-tuned generator cache, the method registry and the two lanes (:mod:`inversion.scheduling`)."""

    model_sets: dict[str, ModelSet]
    downloader: Optional[BackgroundDownloader]
    tuned: S.TunedCache
    registry: MethodRegistry
    lanes: Lanes

    def statuses(self) -> Optional[dict]:
        return self.downloader.status() if self.downloader is not None else None

    def present(self) -> S.FilePresent:
        return S.file_present_from(self.statuses())

    def models_for(self, family: Optional[str]) -> ModelSet:
        if family not in self.model_sets:
            raise S.SessionError(f"Unknown model family {family!r}; choose one of {', '.join(self.model_sets)}.")
        return self.model_sets[family]

    @property
    def first_family(self) -> str:
        return S.default_family(self.model_sets, self.present())

    @property
    def on_cpu(self) -> bool:
        return next(iter(self.model_sets.values())).device.type == "cpu"


def _handlers(ctx: _App) -> SimpleNamespace:
    """The event handlers. API-named handlers return plain values; layout changes (visibility, choices, columns)
    come from the private follow-up handlers chained with .then(), so gradio_client users get data, not UI
    updates. The work itself is done by :mod:`inversion.session`."""
    model_sets, downloader, tuned, registry, sched = ctx.model_sets, ctx.downloader, ctx.tuned, ctx.registry, ctx.lanes
    statuses, present, models_for = ctx.statuses, ctx.present, ctx.models_for
    first_family = ctx.first_family

    def _keeping_tuned(fn: Callable) -> Callable:
        """Hand the states ``fn`` returns (first output) to the PTI generator cache, in this process (on ZeroGPU
        ``fn`` runs in another one, and its states come back as copies)."""
        def each(outputs: Any):
            for out in outputs:
                tuned.keep(out[0])
                yield out

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any):
                yield from each(fn(*args, **kwargs))
            return gen_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any):
            out = fn(*args, **kwargs)
            if inspect.isgenerator(out):  # a wrapper that hides its generator function
                return each(out)
            tuned.keep(out[0])
            return out
        return wrapper

    def _short(fn: Callable) -> Callable:
        """Run ``fn`` under the short lane's gate (bounds concurrent short computations, encoders included)."""
        @functools.wraps(fn)
        def gated(*args: Any, **kwargs: Any):
            with sched.short_work():
                return fn(*args, **kwargs)
        return gated

    def is_long(method: str) -> bool:
        """The optimizing methods (they have presets) go to the long lane; the one-pass encoders do not."""
        return registry[method].has_presets

    def method_labels(family: str) -> list[tuple[str, str]]:
        return S.method_choices(models_for(family), present(), registry)

    def _aligned(state: S.VisitorState):
        for note in state.aligned.warnings:
            gr.Warning(note)
        notes = S.photo_notes(state)
        info = ("\n".join(f"- {n}" for n in notes) if notes
                else "Face aligned. Now pick methods and press **Run** (step 2).")
        faces = [(t, f"face {i + 1}") for i, t in enumerate(S.face_thumbnails(state.photo))]
        return state, state.aligned.image, faces, info

    @_plain_errors
    @_short
    def align(photo: Any, face_index: float, state: Optional[S.VisitorState]):
        path = _upload_path(photo)
        if not path:
            raise S.SessionError("Upload a photo first (or pick an example).")
        index = S.as_whole(face_index, "face number", default=0)
        return _aligned(S.align_photo(_state(state), S.open_photo(path), index))

    @_plain_errors
    @_short
    def pick_face(state: Optional[S.VisitorState], evt: gr.SelectData):
        state = _state(state)
        if state.photo is None:
            raise S.SessionError("Upload a photo first (or pick an example).")
        return _aligned(S.align_photo(state, state.photo, int(evt.index)))

    def after_align(state: Optional[S.VisitorState]):
        n_faces = len(state.photo.faces) if state is not None and state.photo is not None else 0
        empty = S.new_state()
        return (gr.Gallery(visible=n_faces > 1), [], _metrics_frame(empty), _plot(empty), [], None, None,
                _method_dropdown(None), _method_dropdown(None), None, None)

    with_presets = registry.with_presets()

    def _compute(family: str, image: Any, chosen: list[str], presets: dict[str, str], seed: int, stop: Any,
                 starts: Any, progress: Any):
        """The inversions themselves (in a ZeroGPU worker process when wrapped by ``spaces.GPU``): one
        MethodResult or Skipped per method; ``stop`` is polled between steps."""
        def on_progress(method: str, step: int, total: int, metrics: Mapping[str, float]) -> None:
            loss = metrics.get("loss")
            extra = f" · loss {loss:.4f}" if isinstance(loss, (int, float)) else ""
            progress((step, total), desc=f"{registry[method].label}: step {step}/{total}{extra}")

        yield from S.run_inversions(models_for(family), image, chosen, presets=presets, seed=seed,
                                    on_progress=on_progress, cancel=stop, file_present=present(), releasable=True,
                                    keep_on_device=spaces is None, registry=registry, starts=starts)

    encode_on_gpu = _on_gpu(_compute, duration=60)
    optimize_on_gpu = _on_gpu(_compute, duration=240)

    def _invert(family: str, chosen: list[str], *rest: Any):
        """``rest``: one preset per method with presets (run order), seed, allow_long, state, gradio's request and
        progress. Encoders run at once (short lane); the optimizing methods queue in the long lane."""
        n = len(with_presets)
        chosen_presets = {m.key: p for m, p in zip(with_presets, rest[:n])}
        seed, allow_long, state = rest[n], rest[n + 1], rest[n + 2]
        request = rest[n + 3] if len(rest) > n + 3 else None
        progress = rest[n + 4] if len(rest) > n + 4 else gr.Progress()
        state = _state(state)
        models = models_for(family)
        if state.aligned is None:
            raise S.SessionError("Align a photo first (step 1).")
        if not chosen:
            raise S.SessionError("Tick at least one method.")
        seed = S.as_seed(seed)
        if allow_long not in (None, True, False):
            raise S.SessionError(f"'Allow long runs' must be true or false, got {allow_long!r}.")
        ordered = S.order_methods(chosen, registry)
        presets = {m: chosen_presets.get(m) or registry[m].default_preset for m in ordered}
        for m in ordered:
            if presets[m] not in registry[m].presets:
                raise S.SessionError(f"{registry[m].label} has no preset {presets[m]!r}; choose one of "
                                     f"{', '.join(registry[m].presets)}.")
        run_id, stop = sched.board.new_run()
        visitor = getattr(request, "session_hash", None) or run_id
        check_visitor(sched, visitor, [m for m in ordered if is_long(m)])  # before the page's run id changes
        state = replace(state, seed=seed)
        image = S.model_input(state, models.family.size)

        def outputs(message: str, *, results: bool = True):
            if not results:
                return state, run_id, gr.skip(), gr.skip(), gr.skip(), message
            return state, run_id, S.result_gallery(state), _metrics_frame(state), _plot(state), message

        starts = StartCache()  # the encoders' pass is the optimizations' start too (in this process)

        def compute(fn: Callable) -> Callable:
            return lambda ms, flag: fn(family, image, list(ms), presets, state.seed, flag, starts, progress)

        def record(item: Any):
            if isinstance(item, S.MethodResult):
                return item.method, item.preset, float(item.inversion.seconds)
            return None

        yield outputs("Running " + ", ".join(registry[m].label for m in ordered) + " …")
        skipped, notes, last, stopped, completed = [], [], None, False, False
        try:
            for event in run_in_lanes(sched, visitor=visitor, run_id=run_id, stop=stop, family=family,
                                      methods=ordered, presets=presets,
                                      labels={m: registry[m].label for m in ordered}, is_long=is_long,
                                      run_short=compute(encode_on_gpu), run_long=compute(optimize_on_gpu),
                                      allow_long=bool(allow_long), record=record):
                if isinstance(event, Queued):
                    if event.message != last:
                        last = event.message
                        yield outputs(event.message, results=False)
                elif isinstance(event, Started):
                    yield outputs(f"{event.label}: running (Stop ends it after the current step) …", results=False)
                elif isinstance(event, Held):
                    notes.append(event.message)
                    gr.Warning(event.message)
                elif isinstance(event, S.Skipped):
                    skipped.append(event.reason)
                    gr.Warning(event.reason)
                else:
                    state = S.add_result(state, event, registry)
                    note = S.result_notes({event.method: event})
                    for text in note:
                        gr.Warning(text)
                    notes.extend(note)
                    yield outputs(f"{event.label} done in {event.inversion.seconds:.1f} s.")
            completed = True
        except Cancelled:
            stopped = completed = True
        finally:
            # a run that ended (or was stopped) forgets its flag; one whose page went away mid-run (the generator
            # is closed) sets it, so a worker process still running the long part stops at its next step
            (stop.discard if completed else stop.set)()
        ran = [r.label for r in state.results.values()]
        if stopped:
            message = "Stopped. " + (f"Kept: {', '.join(ran)}." if ran else "Nothing had finished.")
            gr.Warning(message)
            yield outputs(message + (" Skipped: " + " ".join(skipped) if skipped else ""))
            return
        yield outputs(S.invert_summary(ran, skipped, notes))

    _invert.__signature__ = _invert_signature(registry)  # type: ignore[attr-defined]  # named API arguments
    _invert.__annotations__ = {**_invert.__annotations__, "request": gr.Request}  # gradio passes the request
    invert = _plain_errors(_keeping_tuned(_invert))

    def after_invert(state: Optional[S.VisitorState]):
        if state is None or not state.results:
            return gr.skip(), _method_dropdown(state), _method_dropdown(state)
        choices = S.edit_choices(models_for(state.family))
        return gr.Dropdown(choices=choices, value=choices[0][1]), _method_dropdown(state), _method_dropdown(state)

    @_plain_errors
    def compare(method: Optional[str], state: Optional[S.VisitorState]):
        return before_after(_state(state), method or None)

    def stop(run_id: Optional[str], request: gr.Request) -> str:
        """Set the stop flags of the visitor's last run and of their long run (reach a worker process too); a run
        ends after its current step, or leaves the long-run queue, and keeps the methods that finished."""
        ticket = sched.long.holder(getattr(request, "session_hash", None) or "")
        stopped = [sched.board.stop(r) for r in {run_id, ticket.run_id if ticket is not None else None} if r]
        if not any(stopped):
            return "Nothing to stop."
        return "Stopping after the current step; the methods that finished are kept."

    def after_stop(state: Optional[S.VisitorState]):
        return _method_dropdown(state)

    def on_leave(request: gr.Request) -> None:
        """A visitor closed the page: their long run (running or queued) stops."""
        ticket = sched.long.holder(getattr(request, "session_hash", None) or "")
        if ticket is not None:
            sched.board.stop(ticket.run_id)

    def _edit(name: str, strength: float, component: float, steps: float, state: Optional[S.VisitorState]):
        state = _state(state)
        if not state.results:
            raise S.SessionError("Invert the photo first (step 2).")
        models = models_for(state.family)
        strength = S.as_number(strength, "strength")  # NaN / infinity: the edit's range check says which range
        component = S.as_whole(component, "component", default=0)
        steps = S.as_whole(steps, "number of images per strip")
        ctl = S.edit_control(name, models)
        if ctl.component_max is not None and not 0 <= component <= ctl.component_max:
            raise S.SessionError(f"The component must be between 0 and {ctl.component_max}, got {component}.")
        edited = S.edit_results(models, state, name, strength, component=component, steps=steps)
        freed = [r.label for m, r in state.results.items() if m not in edited.results]
        if freed:
            gr.Warning(f"{', '.join(freed)}: its tuned generator was freed to keep the server's memory bounded, so it "
                       "is not edited (run PTI again to edit it).")
        return edited, S.strip_gallery(edited)

    edit = _plain_errors(_keeping_tuned(_short(_on_gpu(_edit, duration=60))))

    def after_edit(state: Optional[S.VisitorState]):
        if state is None or state.edit is None or not state.edit.strips:
            return gr.skip()
        return gr.Gallery(columns=len(next(iter(state.edit.strips.values())).offsets))

    @_plain_errors
    @_short
    def paste_back(method: Optional[str], state: Optional[S.VisitorState]):
        state = S.paste_result(_state(state), method or None)
        return state, state.pasted

    def _all_faces_compute(models: ModelSet, photo: Any, methods: list[str], method: Optional[str], edit: Any,
                           presets: dict[str, str], seed: int):
        """Every face inverted, edited and pasted back (in a ZeroGPU worker when wrapped by ``spaces.GPU``)."""
        return G.run_all(models, photo, methods, method=method, edit=edit, presets=presets, seed=seed,
                         file_present=present())

    all_faces_on_gpu = _on_gpu(_all_faces_compute, duration=240)

    def _all_faces(family: str, methods: list[str], *rest: Any):
        """All-faces mode: every face of the photo (up to 8) inverted with the ticked methods, given the chosen
        edit, and pasted back into one photo; returns that photo. ``rest``: one preset per method with presets
        (run order), seed, edit name, strength, component, the method to paste back, state, gradio's request.
        Encoders only: under the short gate. With an optimizing method: the whole run holds a long-lane slot
        (one long run per visitor, the same queue as /invert), so it never runs beside other visitors' long runs."""
        n = len(with_presets)
        presets = {m.key: p for m, p in zip(with_presets, rest[:n])}
        seed, edit_name, strength, component, method, state = rest[n:n + 6]
        request = rest[n + 6] if len(rest) > n + 6 else None
        state = _state(state)
        if state.photo is None:
            raise S.SessionError("Upload a photo and press *Find and align the face* first (step 1).")
        if not methods:
            raise S.SessionError("Tick at least one method (step 2).")
        seed = S.as_seed(seed)
        models = models_for(family)
        edit = None
        if edit_name:
            ctl = S.edit_control(edit_name, models)
            comp = S.as_whole(component, "component", default=0) if ctl.component_max is not None else None
            edit = (edit_name, S.as_number(strength, "strength"), comp)
        long_methods = [m for m in S.order_methods(methods, registry) if is_long(m)]
        args = (models, state.photo, methods, method or None, edit, presets, seed)
        if not long_methods:
            with sched.short_work():
                group, skipped = all_faces_on_gpu(*args)
        else:
            run_id, stop = sched.board.new_run()
            visitor = getattr(request, "session_hash", None) or run_id
            check_visitor(sched, visitor, long_methods)
            ticket = sched.long.join(visitor, run_id, "all faces: " + ", ".join(long_methods), None)
            try:
                for _ in sched.long.wait(ticket, stop, stopped=lambda: Cancelled("stopped while queued")):
                    pass
                group, skipped = all_faces_on_gpu(*args)
            finally:
                sched.long.release(ticket)
        for item in skipped:
            gr.Warning(item.reason)
        return group.pasted

    _all_faces.__signature__ = _all_faces_signature(registry)  # type: ignore[attr-defined]
    _all_faces.__annotations__ = {**_all_faces.__annotations__, "request": gr.Request}
    all_faces = _plain_errors(_all_faces)

    @_plain_errors
    @_short
    def export(state: Optional[S.VisitorState]):
        root = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio") / "stylegan2-exports"
        root.mkdir(parents=True, exist_ok=True)
        S.sweep_old(root, max_age_s=STATE_TTL_S)
        files = S.export_files(_state(state), Path(tempfile.mkdtemp(prefix="export-", dir=root)))
        return [str(f) for f in files[:-1]], str(files[-1])

    def downloading() -> bool:
        return downloader is not None and not downloader.wait(0)

    @_plain_errors
    def refresh_status(family: Optional[str], shown: Optional[list] = None):
        family = family if family in model_sets else first_family
        text = S.status_markdown(models_for(family), present(), statuses(), registry)
        banner = S.family_banner(model_sets, family, present(), statuses())
        labels = method_labels(family)
        methods_update = gr.skip() if shown == labels else gr.CheckboxGroup(choices=labels)
        return text, banner, methods_update, labels, gr.Timer(active=downloading())

    def status(family: str = first_family) -> dict:
        """Model family status: methods that can run now, why the others cannot, and each weight file's state."""
        family = family if family in model_sets else first_family
        return {**S.status_report(model_sets, family, present(), statuses(), registry),
                "long_lane": sched.long.status()}

    @_plain_errors
    def on_load():
        if downloader is not None:
            downloader.start()
        family = S.default_family(model_sets, present())
        return (gr.Radio(value=family), *refresh_status(family))

    @_plain_errors
    def on_edit_choice(name: Optional[str], state: Optional[S.VisitorState]):
        state = _state(state)
        if not name:
            return gr.Slider(), gr.Slider(visible=False), ""
        models = models_for(state.family or first_family)
        ctl = S.edit_control(name, models)
        strength = gr.Slider(minimum=ctl.minimum, maximum=ctl.maximum, value=ctl.default,
                             label=f"{ctl.label}: strength (0 = unchanged)")
        component = gr.Slider(maximum=ctl.component_max or 0, visible=ctl.component_max is not None)
        return strength, component, ctl.help

    return SimpleNamespace(
        align=align, pick_face=pick_face, after_align=after_align, invert=invert, after_invert=after_invert,
        stop=stop, after_stop=after_stop, on_leave=on_leave, edit=edit, after_edit=after_edit, paste_back=paste_back, export=export,
        compare=compare, all_faces=all_faces,
        refresh_status=refresh_status, status=status, on_load=on_load, on_edit_choice=on_edit_choice,
        method_labels=method_labels, with_presets=with_presets)


def build_demo(model_sets: Optional[Mapping[str, ModelSet]] = None, *,
               downloader: Optional[BackgroundDownloader] = None, pti_keep: int = PTI_KEEP,
               methods: MethodRegistry = METHODS, lanes: Optional[LanePlan] = None,
               run_times: Optional[RunTimes] = None) -> gr.Blocks:
    """Build the app. ``model_sets`` (family key -> ModelSet, first = preferred) default to FFHQ + built-in, with
    a :class:`BackgroundDownloader` for their files (started on the first page load or by :func:`main`); when
    ``model_sets`` are given, ``downloader`` is used only if passed (tests inject tiny in-memory sets).
    ``pti_keep``: how many PTI-tuned generators the app keeps for editing, over all visitors (older ones are
    freed; their visitors are asked to run PTI again). ``methods``: the method registry the checkboxes, preset
    controls, help table and status derive from (one ``/invert`` preset argument per method with presets).
    ``lanes`` sizes the short and long lanes (default: from the device, :func:`inversion.lanes.plan_for`);
    ``run_times`` gives the long lane its estimates (default: ``bench/results/runtimes.json`` plus the runs this
    app finishes)."""
    registry = methods
    if model_sets is None:
        downloader = downloader or BackgroundDownloader(list(download_order(registry)))

        def locate(name: str) -> Path:
            path = downloader.path(name)
            return path if path is not None else _not_here(name)

        model_sets = default_model_sets(choose_device(), locate)
    model_sets = dict(model_sets)
    device_type = next(iter(model_sets.values())).device.type
    sched = Lanes.create(device_type, plan=lanes,
                         times=run_times if run_times is not None else RunTimes(device_type, S.load_runtimes()))
    ctx = _App(model_sets, downloader, S.TunedCache(pti_keep), registry, sched)
    h = _handlers(ctx)
    model_sets, present, statuses, models_for = ctx.model_sets, ctx.present, ctx.statuses, ctx.models_for
    first_family, on_cpu, tuned = ctx.first_family, ctx.on_cpu, ctx.tuned

    # ---------------------------------------------------------------- layout
    with gr.Blocks(analytics_enabled=False, title="StyleGAN2 face inversion", delete_cache=(3600, 3600)) as demo:
        state = gr.State(None, time_to_live=STATE_TTL_S)
        cancel_state = gr.State(None, time_to_live=STATE_TTL_S)
        shown_labels = gr.State(None)
        gr.Markdown(INTRO)
        banner = gr.Markdown(S.family_banner(model_sets, first_family, present(), statuses()), elem_id="banner")
        with gr.Accordion("Model files and status", open=False):
            status_md = gr.Markdown(S.status_markdown(models_for(first_family), present(), statuses(), registry),
                                    elem_id="status")
        timer = gr.Timer(3.0, active=downloader is not None)

        gr.Markdown("## 1 · Photo")
        with gr.Row():
            with gr.Column(scale=1):
                photo = gr.Image(label="Your photo (upload, webcam or paste)", type="filepath", image_mode=None,
                                 sources=["upload", "webcam", "clipboard"],
                                 webcam_options=gr.WebcamOptions(mirror=True), height=360, elem_id="photo")
                gr.Examples(EXAMPLES, inputs=[photo], label="Examples (public domain)")
                face_index = gr.Number(0, precision=0, visible=False, label="face index (0 = best)")
                all_mode = gr.Checkbox(False, label="All faces: invert, edit and paste back every face (up to 8)",
                                       elem_id="all-faces-mode")
                align_btn = gr.Button("Find and align the face", variant="primary", elem_id="align-btn")
            with gr.Column(scale=1):
                aligned = gr.Image(label="Aligned face (FFHQ frame)", type="pil", interactive=False, height=360,
                                   format="png", elem_id="aligned")
                faces = gr.Gallery(label="Several faces found — click the one to use", columns=6, height=140,
                                   visible=False, allow_preview=False, elem_id="faces")
                photo_info = gr.Markdown()

        gr.Markdown("## 2 · Invert")
        with gr.Row():
            with gr.Column(scale=1):
                family = gr.Radio([(m.family.label, k) for k, m in model_sets.items()], value=first_family,
                                  label="Model", elem_id="family")
                methods = gr.CheckboxGroup(h.method_labels(first_family),
                                           value=[m for m in ("e4e", "psp") if m in registry],
                                           label="Methods (fast ones run first)", elem_id="methods")
                with gr.Accordion("Presets and seed", open=False):
                    wanted = "fast" if on_cpu else "balanced"
                    preset_controls = [
                        gr.Radio(list(m.presets), value=wanted if wanted in m.presets else m.default_preset,
                                 label=f"{m.label} preset", elem_id=preset_parameter(m.key))
                        for m in h.with_presets]
                    seed = gr.Number(0, precision=0, label="Seed")
                    allow_long = gr.Checkbox(False, visible=device_type == "cpu", elem_id="allow-long",
                                             label=f"Allow runs longer than {CONFIRM_OVER_S / 60:.0f} minutes "
                                                   "(this CPU server asks first, with the measured estimate)")
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run-btn")
                    stop_btn = gr.Button("Stop", variant="stop")
                run_info = gr.Markdown(elem_id="run-info")
            with gr.Column(scale=2):
                results = gr.Gallery(label="Aligned input and reconstructions", columns=6, height=300,
                                     format="png", allow_preview=True, elem_id="results")
                table = gr.Dataframe(headers=list(S.METRIC_COLUMNS),
                                     label=f"Scores per method (MSE/LPIPS: lower is closer; ID similarity: cosine of "
                                           f"{S.IDENTITY_MODEL} "
                                     "embeddings, FFHQ only; code spread: editability proxy, lower edits better)",
                                     interactive=False,
                                     elem_id="metrics")
                compare_method = gr.Dropdown([], label="Before / after: which method", allow_custom_value=True,
                                             elem_id="compare-method")
                compare_inv = gr.ImageSlider(label="Aligned input | reconstruction (drag to compare)", type="pil",
                                             format="png", max_height=COMPARE_SIZE, elem_id="compare-inversion")
                plot = gr.ScatterPlot(_plot(S.new_state()), x="distortion", y="code_spread", color="method",
                                      title="Distortion vs editability",
                                      x_title="distortion (LPIPS; MSE when LPIPS is missing) — lower is closer",
                                      y_title="code spread — lower edits better", height=260, elem_id="tradeoff")
        with gr.Accordion("What the methods do, and expected run times", open=False):
            gr.Markdown(methods_help(registry))

        gr.Markdown("## 3 · Edit & download")
        with gr.Row():
            with gr.Column(scale=1):
                first_edits = S.edit_choices(models_for(first_family))
                first_spec = get_edit(first_edits[0][1])
                edit_name = gr.Dropdown(first_edits, value=first_spec.name, label="Edit", allow_custom_value=True,
                                        elem_id="edit-name")
                edit_help = gr.Markdown()
                strength = gr.Slider(*first_spec.strength_range, value=first_spec.default_strength, step=0.5,
                                     label=f"{first_spec.label}: strength (0 = unchanged)")
                component = gr.Slider(0, 79, value=0, step=1, label="Component (0 changes the most)",
                                      visible=first_spec.is_explorer)
                steps = gr.Slider(1, 9, value=3 if on_cpu else 5, step=1, label="Images per strip")
                edit_btn = gr.Button("Apply to every result", variant="primary", elem_id="edit-btn")
            with gr.Column(scale=2):
                strips = gr.Gallery(label="Edit strips (one row per method)", columns=3, format="png",
                                    elem_id="strips")
                compare_edit = gr.ImageSlider(label="Reconstruction | edit (method chosen in step 2)", type="pil",
                                              format="png", max_height=COMPARE_SIZE, elem_id="compare-edit")
        with gr.Row():
            with gr.Column(scale=1):
                paste_method = gr.Dropdown([], label="Paste which result back into the photo", allow_custom_value=True,
                                           elem_id="paste-method")
                paste_btn = gr.Button("Paste back", elem_id="paste-btn")
                all_btn = gr.Button("Invert, edit and paste back every face", visible=False, variant="primary",
                                    elem_id="all-faces-btn")
                export_btn = gr.Button("Prepare downloads", elem_id="export-btn")
                download = gr.DownloadButton("Download all (zip)", elem_id="download")
                files = gr.File(label="Files", file_count="multiple", interactive=False, elem_id="files")
            with gr.Column(scale=2):
                pasted = gr.Image(label="Edited face pasted back", type="pil", interactive=False, format="png",
                                  elem_id="pasted")

        # ------------------------------------------------------------ events
        private = dict(api_visibility="private", queue=False)
        cleared = [faces, results, table, plot, strips, pasted, files, paste_method, compare_method, compare_inv,
                   compare_edit]
        # two lanes: short events share the "short" group; /invert has its own group, sized so that its handler
        # starts at once (its encoders take the short gate, its long part waits in the app's long lane, where the
        # visitor sees the position and the estimated start) -- gradio's queue is not where long runs wait
        plan = sched.plan
        short = dict(concurrency_id="short", concurrency_limit=plan.short)
        align_btn.click(h.align, [photo, face_index, state], [state, aligned, faces, photo_info], api_name="align",
                        preprocess=False, **short).success(h.after_align, [state], cleared, **private)
        faces.select(h.pick_face, [state], [state, aligned, faces, photo_info], api_visibility="private",
                     **short).success(h.after_align, [state], cleared, **private)
        run_event = run_btn.click(
            h.invert, [family, methods, *preset_controls, seed, allow_long, state],
            [state, cancel_state, results, table, plot, run_info], api_name="invert", concurrency_id="invert",
            concurrency_limit=plan.short + plan.long + plan.max_waiting, show_progress_on=[run_info],
            preprocess=False)
        run_event.then(h.after_invert, [state], [edit_name, paste_method, compare_method], **private
                       ).then(h.compare, [compare_method, state], [compare_inv, compare_edit], **private)
        compare_method.input(h.compare, [compare_method, state], [compare_inv, compare_edit], **private)
        # Stop: the flag reaches the run between steps (in this process or a ZeroGPU worker); ``cancels`` also
        # drops the page's pending event at once (an API client calls /stop, then reads its job's last outputs)
        stop_btn.click(h.stop, [cancel_state], [run_info], api_name="stop", queue=False, cancels=[run_event]
                       ).then(h.after_stop, [state], [paste_method], **private)
        table.change(lambda st: _plot_update(_state(st)), [state], [plot], **private)  # limits follow the points
        edit_name.change(h.on_edit_choice, [edit_name, state], [strength, component, edit_help], **private)
        edit_btn.click(h.edit, [edit_name, strength, component, steps, state], [state, strips], api_name="edit",
                       preprocess=False, **short).success(h.after_edit, [state], [strips], **private
                                                  ).then(h.compare, [compare_method, state],
                                                         [compare_inv, compare_edit], **private)
        paste_btn.click(h.paste_back, [paste_method, state], [state, pasted], api_name="paste_back", **short)
        export_btn.click(h.export, [state], [files, download], api_name="export", **short)
        all_mode.change(lambda on: (gr.Button(visible=on), gr.Button(visible=not on)), [all_mode],
                        [all_btn, paste_btn], **private)
        # all faces: encoders under the short gate, optimizing methods through the long lane (see h.all_faces)
        all_btn.click(h.all_faces, [family, methods, *preset_controls, seed, edit_name, strength, component,
                                    paste_method, state], [pasted], api_name="all_faces", concurrency_id="invert",
                      concurrency_limit=plan.short + plan.long + plan.max_waiting)
        status_outputs = [status_md, banner, methods, shown_labels, timer]
        timer.tick(h.refresh_status, [family, shown_labels], status_outputs, **private)
        family.change(h.refresh_status, [family, shown_labels], status_outputs, **private)
        demo.load(h.on_load, None, [family, *status_outputs], api_visibility="private")
        demo.unload(h.on_leave)
        gr.api(h.status, api_name="status", queue=False)

    demo.queue(default_concurrency_limit=2, max_size=64)
    demo.weights_downloader = downloader  # type: ignore[attr-defined]  # started by main()
    demo.tuned_generators = tuned  # type: ignore[attr-defined]
    demo.lanes = sched  # type: ignore[attr-defined]
    demo.long_lane = sched.long  # type: ignore[attr-defined]
    return demo


def main() -> None:
    """Start the weight downloads and serve the app (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, default :7860)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if demo.weights_downloader is not None:
        demo.weights_downloader.start()
    demo.launch(max_file_size=MAX_FILE_SIZE)


demo = build_demo()
"""Built at import (no downloads, no model loading) so `gradio app.py` and Spaces find it."""

if __name__ == "__main__":
    main()
