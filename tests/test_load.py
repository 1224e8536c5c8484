"""Ten simulated visitors at once through gradio_client, against the app on 127.0.0.1 with the tiny models.

Each visitor uploads its own variant of an example photo (flipped / tinted / darker copies), aligns it, inverts it
with e4e (three of them also with PTI once), edits every result and exports, over and over for a bounded time.
Checked: every request is answered (or waits in the queue with its position), every image and every code a visitor
gets back is the one its own photo produces (compared by content with the same steps run here in-process), resident
memory stays under a bound, and PTI-tuned generators are released as designed (at most ``PTI_KEEP`` kept over all
visitors; all gone once the visitors' states are dropped).

``STYLEGAN_LOAD_SECONDS`` (default 5) sets the duration of the steady phase (after a first round of all ten); figures are printed and written to
``$STYLEGAN_LOAD_REPORT`` (default ``<tmp>/stylegan2_load_report.json``). A longer run:
``STYLEGAN_LOAD_SECONDS=300 python -m pytest tests/test_load.py -s``.
"""
from __future__ import annotations

import gc
import json
import os
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from gradio_client.utils import Status  # noqa: E402

from inversion import session as S  # noqa: E402
from tiny_models import SIZE, tiny_model_set  # noqa: E402
from app_server import rss_mb, settled_rss_mb, launched  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HOPPER = ROOT / "examples" / "grace_hopper.jpg"
ASTRONAUT = ROOT / "examples" / "astronaut.png"
VISITORS = 10
PTI_VISITORS = 3
PTI_KEEP = 2
SECONDS = float(os.environ.get("STYLEGAN_LOAD_SECONDS", "5"))
TOLERANCE = 1.0  # mean abs difference (0-255, at 128 px) between what a visitor got and what its own photo gives
RECON_TOLERANCE = 0.05  # the tiny random e4e redraws every photo much alike (min. 0.21 between two visitors):
# its reconstructions must match exactly (they are the same computation, PNG-encoded)
CODES_TOLERANCE = 1e-4  # max abs difference of W+ codes (two visitors' codes differ by >= 0.0098)
RSS_SLACK_MB = 200.0
"""Steady state (after one round of all ten at once, which warms threads, thread pools and allocator arenas up): the
peak RSS growth over the settled level must stay under ten times one visitor's own peak growth (ten visitors' requests
in flight) + ``RSS_SLACK_MB``. Measured on a 2-core CPU box: one visitor alone ~22 MiB, ten at once ~220 MiB, bound
~420 MiB; after the visitors leave, RSS is within 60 MiB of the steady level (measured +18: no growth across rounds)."""


def _tint(r: float, g: float, b: float) -> Callable[[Image.Image], Image.Image]:
    def apply(im: Image.Image) -> Image.Image:
        arr = np.asarray(im, np.float32) * np.array([r, g, b], np.float32)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return apply


def _flip(im: Image.Image) -> Image.Image:
    return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def _gray(im: Image.Image) -> Image.Image:
    return im.convert("L").convert("RGB")


VARIANTS: list[tuple[Path, Callable[[Image.Image], Image.Image]]] = [
    (HOPPER, lambda im: im), (HOPPER, _flip), (HOPPER, _tint(1.1, 1.0, 0.8)), (HOPPER, _tint(0.8, 1.0, 1.15)),
    (HOPPER, _tint(0.75, 0.75, 0.75)), (HOPPER, _gray), (ASTRONAUT, lambda im: im), (ASTRONAUT, _flip),
    (ASTRONAUT, _tint(1.1, 0.95, 0.8)), (HOPPER, _tint(1.2, 1.2, 1.2)),
]


@dataclass
class Expected:
    """What visitor ``i``'s own photo gives, computed in-process: the aligned crop, e4e codes and image, edit strip."""

    photo: Path
    strength: float
    aligned: np.ndarray
    model_input: np.ndarray
    codes: np.ndarray
    reconstruction: np.ndarray
    strip: list[np.ndarray]


@dataclass
class Record:
    endpoint: str
    visitor: int
    seconds: float
    outcome: str  # "ok" or the visitor's error message
    max_rank: int = 0  # highest queue position the visitor was told


@dataclass
class Run:
    records: list[Record] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    pti_strips: dict[int, bool] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, record: Record) -> None:
        with self.lock:
            self.records.append(record)


def _small(image: Image.Image) -> np.ndarray:
    """Images are compared at 128 px at most (the harness shares the app's process: keep its memory small)."""
    image = image.convert("RGB")
    if image.width > 128:
        image = image.resize((128, 128), Image.Resampling.BOX)
    return np.asarray(image, np.float32)


def _array(value: Any) -> np.ndarray:
    path = value["path"] if isinstance(value, dict) else value
    with Image.open(path) as im:
        return _small(im)


def _gallery(value: list) -> list[np.ndarray]:
    return [_array(item["image"] if isinstance(item, dict) else item[0]) for item in value]


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean()) if a.shape == b.shape else float("inf")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cache = tmp_path_factory.mktemp("xdg")
    import app

    models = tiny_model_set()
    with launched(lambda: app.build_demo({"tiny": models}, pti_keep=PTI_KEEP),
                  str(cache), max_file_size=app.MAX_FILE_SIZE) as (url, demo):
        yield url, demo, models


@pytest.fixture(scope="module")
def expected(server, tmp_path_factory) -> list[Expected]:
    """Each visitor's photo and what it must give (same steps as the app, run here)."""
    _, _, models = server
    folder = tmp_path_factory.mktemp("visitors")
    out = []
    for i, (source, change) in enumerate(VARIANTS):
        path = folder / f"visitor{i}.png"
        with Image.open(source) as im:
            change(im.convert("RGB")).save(path)
        state = S.align_photo(S.new_state(), S.open_photo(str(path)), 0)
        (result,) = S.run_inversions(models, S.model_input(state, SIZE), ["e4e"])
        strength = round(1.0 + 0.7 * i, 1)
        edited = S.edit_results(models, S.add_result(state, result), "sefa", strength, component=0, steps=3)
        out.append(Expected(
            photo=path, strength=strength, aligned=_small(state.aligned.image),
            model_input=_small(S.to_pil(S.model_input(state, SIZE))), codes=result.inversion.w_plus.numpy(),
            reconstruction=_small(result.reconstruction), strip=[_small(im) for im in edited.edit.strips["e4e"].images]))
    return out


def test_visitor_photos_are_told_apart(expected):
    """A mix-up would be caught: every two visitors' results differ far more than the matching tolerance."""
    for i, a in enumerate(expected):
        for b in expected[i + 1:]:
            assert _diff(a.aligned, b.aligned) > 3 * TOLERANCE
            assert _diff(a.model_input, b.model_input) > 3 * TOLERANCE
            assert _diff(a.reconstruction, b.reconstruction) > 3 * RECON_TOLERANCE
            assert _diff(a.strip[0], b.strip[0]) > 3 * TOLERANCE  # the strengths differ per visitor
            assert np.abs(a.codes - b.codes).max() > 30 * CODES_TOLERANCE


def test_tuned_cache_keeps_the_most_recent_and_follows_states():
    """The design the load test checks end to end: at most ``capacity`` tuned generators over all visitors (least
    recently used released first), held weakly (a dropped state takes its generator along)."""
    import torch

    from inversion.result import Inversion

    def state_with_pti() -> S.VisitorState:
        inv = Inversion(method="pti", w_plus=torch.zeros(1, 2, 4), image=torch.zeros(1, 3, 4, 4))
        result = S.MethodResult("pti", "tiny", "fast", inv, {}, tuned=S.TunedGenerator(torch.nn.Linear(2, 2)))
        return S.VisitorState(results={"pti": result})

    cache = S.TunedCache(2)
    a, b, c = state_with_pti(), state_with_pti(), state_with_pti()
    for state in (a, b):
        cache.keep(state)
    cache.keep(a)  # a used again: b is now the oldest
    cache.keep(c)
    assert len(cache) == 2 and b.results["pti"].tuned.generator is None
    assert a.results["pti"].tuned.generator is not None and c.results["pti"].tuned.generator is not None
    with pytest.raises(S.SessionError, match="Run PTI again"):
        b.results["pti"].full_inversion()
    assert a.results["pti"].full_inversion().generator is a.results["pti"].tuned.generator
    del a
    gc.collect()
    assert len(cache) == 1


def _submit(c: Client, run: Run, visitor: int, endpoint: str, *args: Any) -> Optional[Any]:
    """One request; polls its status (queue position) until done. Returns the outputs, or None on an AppError."""
    start = time.perf_counter()
    job = c.submit(*args, api_name=endpoint)
    max_rank = 0
    while not job.done():
        st = job.status()
        if st.code == Status.IN_QUEUE and st.rank is not None:
            max_rank = max(max_rank, st.rank + 1)
        time.sleep(0.02)
    try:
        out = job.result()
        outcome = "ok"
    except AppError as err:
        out, outcome = None, str(err)
    run.add(Record(endpoint, visitor, time.perf_counter() - start, outcome, max_rank))
    return out


@dataclass
class Sync:
    """Phases: every visitor's first round runs at once (warm-up of threads and allocator arenas; the PTI
    visitors meet at ``pti``), then ``warmed`` lets the test take the steady-state baseline before ``go``."""

    pti: threading.Barrier = field(default_factory=lambda: threading.Barrier(PTI_VISITORS, timeout=90))
    warmed: threading.Barrier = field(default_factory=lambda: threading.Barrier(VISITORS + 1, timeout=300))
    go: threading.Event = field(default_factory=threading.Event)
    deadline: float = 0.0


def _round(c: Client, i: int, everyone: list[Expected], run: Run, sync: Sync, *, first: bool) -> None:
    """One visit: align, invert, edit, export, checking every image and code against the visitor's own."""
    mine = everyone[i]

    def check(what: str, got: np.ndarray, want: np.ndarray, others: list[np.ndarray],
              tolerance: float = TOLERANCE) -> None:
        own = _diff(got, want)
        if own >= tolerance or any(_diff(got, o) <= own for o in others):
            run.mismatches.append(f"visitor {i} {what}: {own:.2f} from its own")

    out = _submit(c, run, i, "/align", handle_file(str(mine.photo)), 0)
    if out is None:
        return
    check("aligned", _array(out[0]), mine.aligned, [e.aligned for k, e in enumerate(everyone) if k != i])
    methods = ["e4e", "pti"] if first and i < PTI_VISITORS else ["e4e"]
    out = _submit(c, run, i, "/invert", "tiny", methods, "fast", "fast", "fast", 0)
    if out is None:
        return
    shown = _gallery(out[0])
    check("model input", shown[0], mine.model_input, [e.model_input for k, e in enumerate(everyone) if k != i])
    check("e4e image", shown[1], mine.reconstruction, [e.reconstruction for k, e in enumerate(everyone) if k != i],
          RECON_TOLERANCE)
    if "pti" in methods:
        sync.pti.wait()  # every PTI visitor has its tuned generator now: one of the three must have been freed
    out = _submit(c, run, i, "/edit", "sefa", mine.strength, 0, 3)
    if out is None:
        return
    strips = _gallery(out)
    for k, want in enumerate(mine.strip):
        check(f"edit image {k}", strips[k], want, [e.strip[k] for j, e in enumerate(everyone) if j != i],
              RECON_TOLERANCE if k == 1 else TOLERANCE)
    if "pti" in methods:
        run.pti_strips[i] = len(strips) == 2 * len(mine.strip)
    out = _submit(c, run, i, "/export")
    if out is None:
        return
    files = {Path(f).name: Path(f) for f in out[0]}
    codes = np.load(files["e4e_wplus.npy"])
    own = float(np.abs(codes - mine.codes).max())
    if own > CODES_TOLERANCE or any(float(np.abs(codes - e.codes).max()) <= own
                                    for k, e in enumerate(everyone) if k != i):
        run.mismatches.append(f"visitor {i} codes: {own:.2e} from its own")
    with zipfile.ZipFile(out[1]) as z:
        if "e4e_wplus.npy" not in z.namelist():
            run.mismatches.append(f"visitor {i}: zip without its codes")


def _visit(url: str, i: int, everyone: list[Expected], run: Run, sync: Sync) -> None:
    try:
        c = Client(url, verbose=False)
        try:
            _round(c, i, everyone, run, sync, first=True)
        finally:
            sync.warmed.wait()
        sync.go.wait(300)
        while time.perf_counter() < sync.deadline:
            _round(c, i, everyone, run, sync, first=False)
    except Exception as err:  # noqa: BLE001 - reported by the test
        run.failures.append(f"visitor {i}: {type(err).__name__}: {err}")


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


def test_ten_visitors_at_once(server, expected):
    url, demo, _ = server
    tuned = demo.tuned_generators
    peak = {"rss": 0.0, "tuned": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], rss_mb())
            peak["tuned"] = max(peak["tuned"], len(tuned))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def one_visit(c: Client, photo: Path) -> None:
        c.predict(handle_file(str(photo)), 0, api_name="/align")
        c.predict("tiny", ["e4e"], "fast", "fast", "fast", 0, api_name="/invert")
        c.predict("sefa", 1.0, 0, 3, api_name="/edit")
        c.predict(api_name="/export")

    warm = Client(url, verbose=False)  # one visitor alone first: warm-up, then its footprint
    one_visit(warm, expected[0].photo)
    demo.state_holder.delete_state(warm.session_hash)
    start_rss = peak["rss"] = settled_rss_mb()
    one_visit(warm, expected[1].photo)
    one_peak = peak["rss"] - start_rss  # what one visitor's requests need while they run
    one_state = settled_rss_mb() - start_rss  # what its state holds afterwards
    demo.state_holder.delete_state(warm.session_hash)

    run, sync = Run(), Sync()
    started = time.perf_counter()
    threads = [threading.Thread(target=_visit, args=(url, i, expected, run, sync)) for i in range(VISITORS)]
    for t in threads:
        t.start()
    sync.warmed.wait()  # all ten went through one round at once
    first_round_s = time.perf_counter() - started
    first_round_peak = peak["rss"]
    steady_base = peak["rss"] = settled_rss_mb()  # ten visitors' states held
    sync.deadline = time.perf_counter() + SECONDS
    sync.go.set()
    for t in threads:
        t.join(timeout=SECONDS + 300)
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    steady_peak = peak["rss"]
    bound = VISITORS * one_peak + RSS_SLACK_MB
    for session in list(demo.state_holder.session_data):  # the visitors leave: states dropped as on expiry
        demo.state_holder.delete_state(session)
    gc.collect()
    tuned_after = len(tuned)
    after_rss = settled_rss_mb()

    ok = [r for r in run.records if r.outcome == "ok"]
    errors = [r for r in run.records if r.outcome != "ok"]

    def stats(records: list[Record]) -> dict:
        secs = [r.seconds for r in records]
        return {"requests": len(records), "served": sum(r.outcome == "ok" for r in records),
                "p50_s": round(_percentile(secs, 50), 3), "p95_s": round(_percentile(secs, 95), 3)}

    report = {
        "visitors": VISITORS, "steady_seconds_planned": SECONDS, "seconds": round(elapsed, 1),
        "first_round_seconds": round(first_round_s, 1), **stats(run.records),
        "errors": sorted({r.outcome for r in errors}),
        "per_endpoint": {ep: stats([r for r in run.records if r.endpoint == ep])
                         for ep in ("/align", "/invert", "/edit", "/export")},
        "queued_requests": sum(r.max_rank > 0 for r in run.records),
        "max_queue_position": max((r.max_rank for r in run.records), default=0),
        "rss_start_mib": round(start_rss, 1), "rss_one_visitor_peak_growth_mib": round(one_peak, 1),
        "rss_one_visitor_state_mib": round(one_state, 1), "rss_first_round_peak_mib": round(first_round_peak, 1),
        "rss_steady_base_mib": round(steady_base, 1), "rss_steady_peak_mib": round(steady_peak, 1),
        "rss_steady_growth_bound_mib": round(bound, 1), "rss_after_leaving_mib": round(after_rss, 1),
        "pti_keep": PTI_KEEP, "pti_generators_peak": peak["tuned"], "pti_generators_after_leaving": tuned_after,
        "pti_strips_kept": {str(k): v for k, v in sorted(run.pti_strips.items())},
        "mismatches": run.mismatches, "failures": run.failures,
    }
    target = Path(os.environ.get("STYLEGAN_LOAD_REPORT") or Path(tempfile.gettempdir()) / "stylegan2_load_report.json")
    target.write_text(json.dumps(report, indent=2))
    print("\n" + json.dumps(report, indent=2) + f"\n(written to {target})")

    assert not run.failures, run.failures
    assert all(not t.is_alive() for t in threads)
    assert not run.mismatches, run.mismatches  # nobody got another visitor's image or codes
    assert not errors, report["errors"]  # every request answered with its result
    assert len(ok) >= 2 * 4 * VISITORS  # every visitor went through the whole flow at least twice
    assert report["queued_requests"] > 0  # some waited in the queue, told their position
    # memory: under load RSS stays within ten visitors' own needs (+ slack); nothing accumulates
    assert steady_peak - steady_base < bound
    assert after_rss < steady_base + 60
    # PTI: three tuned generators, two kept: exactly one visitor's PTI result was left out of its edit; and once
    # the visitors are gone, so are their tuned generators
    assert peak["tuned"] <= PTI_KEEP
    assert sorted(run.pti_strips.values()) == [False, True, True]
    assert tuned_after == 0
