"""Twenty visitors on 127.0.0.1 through gradio_client (tiny models, the lane sizes the app picks for this CPU):
five ask for e4e + W+ (a long run each, queued in the long lane), fifteen do short work only (align, e4e, edit,
paste-back, export) for up to two rounds while long runs are going. Bounded in count (20 visitors, at most 3
rounds each) and time (a deadline). Reports p50/p95 latency of the short requests (all, and those made while a long
run was running), how many short requests finished while a long run that had started before them was still running
(they did not queue behind it), the queue figures and peak memory; figures go to ``$STYLEGAN_LANES_REPORT``
(default ``<tmp>/stylegan2_lanes_load.json``). Only honest bounds are asserted: nothing fails, the lane never runs
more than its slots, long runs queue, short requests overtake long runs, memory stays bounded."""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from tiny_models import tiny_model_set  # noqa: E402
from app_server import free_port, rss_mb, settled_rss_mb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = (ROOT / "examples" / "grace_hopper.jpg", ROOT / "examples" / "astronaut.png")
VISITORS = 20
LONG_VISITORS = 5
SHORT_ROUNDS = 2
DEADLINE_S = 180.0
SHORT_P95_BOUND_S = 60.0
"""Loose sanity bound on the short requests' p95 (measured 16-18 s on the shared 2-core box at load average ~13, where
other jobs ran too; most of it is waiting for one of the two short slots among 15 visitors); the real check is that
short requests finish while long runs that started before them still run."""
RSS_GROWTH_BOUND_MB = 1500.0
"""Peak RSS growth over the settled start: 20 visitors' states, in-flight requests and the server's response caches
on the tiny models (measured 560-710 MiB); the bound is about twice that, below what unbounded concurrency or a
leak per request would reach over 150+ requests."""
SHORT = ("/align", "/invert", "/edit", "/paste_back", "/export")


@dataclass
class Record:
    endpoint: str
    visitor: int
    started: float
    ended: float
    outcome: str
    long_running_at_start: Optional[str]  # run id of a long run holding a slot when the request was made
    long_running_at_end: Optional[str]

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Shared:
    records: list[Record] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    long_done: threading.Event = field(default_factory=threading.Event)
    long_left: int = LONG_VISITORS
    positions: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    long_rows: list[list[str]] = field(default_factory=list)
    aligned: threading.Barrier = field(default_factory=lambda: threading.Barrier(LONG_VISITORS + 1, timeout=DEADLINE_S))
    go: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cache = tmp_path_factory.mktemp("xdg")
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    import app

    demo = app.build_demo({"tiny": tiny_model_set()})  # lane sizes from the device (this CPU)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                max_file_size=app.MAX_FILE_SIZE)
    try:
        yield f"http://127.0.0.1:{port}/", demo
    finally:
        demo.close()
        if old is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old


def _running_run(lane: Any) -> Optional[str]:
    with lane._cond:  # the ticket running now (the test reads the lane it drives)
        return lane._running[0].run_id if lane._running else None


def _call(shared: Shared, lane: Any, visitor: int, endpoint: str, fn: Callable[[], Any]) -> Any:
    at_start, start = _running_run(lane), time.perf_counter()
    try:
        out, outcome = fn(), "ok"
    except AppError as err:
        out, outcome = None, str(err)
    with shared.lock:
        shared.records.append(Record(endpoint, visitor, start, time.perf_counter(), outcome, at_start,
                                     _running_run(lane)))
    return out


def _client(url: str) -> Client:
    """A visitor; outputs stay on the server (not downloaded) and slow answers on a busy CPU are waited for."""
    return Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": DEADLINE_S})


def _long_visitor(url: str, lane: Any, i: int, shared: Shared) -> None:
    c = _client(url)
    try:
        _call(shared, lane, i, "/align", lambda: c.predict(handle_file(str(PHOTOS[i % 2])), 0, api_name="/align"))
    finally:
        shared.aligned.wait()  # the five long runs are asked for at once: they queue
    job = c.submit("tiny", ["e4e", "w+"], "fast", "fast", "fast", i, api_name="/invert")
    if i == 0:  # a second long request while the first is queued or running: a plain refusal
        end = time.perf_counter() + DEADLINE_S
        while lane.holder(c.session_hash) is None and not job.done() and time.perf_counter() < end:
            time.sleep(0.05)
        try:
            c.predict("tiny", ["w"], "fast", "fast", "fast", 0, api_name="/invert")
        except AppError as err:
            shared.refusals.append(str(err))
    out = job.result(timeout=DEADLINE_S)
    messages = [o[3] for o in job.outputs() if isinstance(o, (list, tuple)) and len(o) >= 4]
    with shared.lock:
        shared.positions.extend(m for m in messages if "position" in m)
        shared.long_rows.append([row[0] for row in out[1]["data"]])
    _call(shared, lane, i, "/edit", lambda: c.predict("sefa", 2.0, 0, 3, api_name="/edit"))
    _call(shared, lane, i, "/export", lambda: c.predict(api_name="/export"))


def _short_visitor(url: str, lane: Any, i: int, shared: Shared, deadline: float) -> None:
    c = _client(url)
    shared.go.wait(DEADLINE_S)
    for round_ in range(SHORT_ROUNDS):
        if round_ and (shared.long_done.is_set() or time.perf_counter() > deadline):
            break
        _call(shared, lane, i, "/align", lambda: c.predict(handle_file(str(PHOTOS[i % 2])), 0, api_name="/align"))
        _call(shared, lane, i, "/invert", lambda: c.predict("tiny", ["e4e"], "fast", "fast", "fast", 0,
                                                            api_name="/invert"))
        _call(shared, lane, i, "/edit", lambda: c.predict("sefa", 1.0 + 0.1 * i, 0, 3, api_name="/edit"))
        _call(shared, lane, i, "/paste_back", lambda: c.predict("e4e", api_name="/paste_back"))
        _call(shared, lane, i, "/export", lambda: c.predict(api_name="/export"))


def _guard(target: Callable[..., None], shared: Shared, *args: Any) -> Callable[[], None]:
    def run() -> None:
        try:
            target(*args)
        except Exception as err:  # noqa: BLE001 - reported by the test
            shared.failures.append(f"{target.__name__}{args[2:3]}: {type(err).__name__}: {err}")
        finally:
            if target is _long_visitor:
                with shared.lock:
                    shared.long_left -= 1
                    if shared.long_left == 0:
                        shared.long_done.set()
    return run


def _pct(values: list[float], q: float) -> Optional[float]:
    return round(float(np.percentile(values, q)), 3) if values else None


def test_twenty_visitors_short_work_overtakes_long_runs(server):
    url, demo = server
    lane = demo.long_lane
    plan = demo.lanes.plan
    _client(url).predict("tiny", api_name="/status")  # warm the server up
    start_rss = settled_rss_mb()
    peak = {"rss": start_rss, "running": 0, "waiting": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            st = lane.status()
            peak["rss"] = max(peak["rss"], rss_mb())
            peak["running"] = max(peak["running"], st["running"])
            peak["waiting"] = max(peak["waiting"], st["waiting"])
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    shared = Shared()
    started = time.perf_counter()
    deadline = started + DEADLINE_S
    threads = [threading.Thread(target=_guard(_long_visitor, shared, url, lane, i, shared))
               for i in range(LONG_VISITORS)]
    threads += [threading.Thread(target=_guard(_short_visitor, shared, url, lane, i, shared, deadline))
                for i in range(LONG_VISITORS, VISITORS)]
    for t in threads:
        t.start()
    shared.aligned.wait()  # the long visitors have aligned and now ask for their runs; the short visitors start
    shared.go.set()
    for t in threads:
        t.join(timeout=max(1.0, deadline + 60 - time.perf_counter()))
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()

    short = [r for r in shared.records if r.endpoint in SHORT and r.visitor >= LONG_VISITORS]
    during = [r for r in short if r.long_running_at_start is not None]
    overtook = [r for r in during if r.long_running_at_end == r.long_running_at_start]
    report = {
        "visitors": VISITORS, "long_visitors": LONG_VISITORS, "lane_plan": vars(plan), "seconds": round(elapsed, 1),
        "short_requests": len(short), "short_ok": sum(r.outcome == "ok" for r in short),
        "short_p50_s": _pct([r.seconds for r in short], 50), "short_p95_s": _pct([r.seconds for r in short], 95),
        "short_during_long_runs": len(during),
        "short_during_long_p50_s": _pct([r.seconds for r in during], 50),
        "short_during_long_p95_s": _pct([r.seconds for r in during], 95),
        "short_finished_inside_one_long_run": len(overtook),
        "per_endpoint_p95_s": {ep: _pct([r.seconds for r in short if r.endpoint == ep], 95) for ep in SHORT},
        "lane_peak_running": peak["running"], "lane_peak_waiting": peak["waiting"],
        "queue_messages_seen": len(shared.positions), "second_long_request_refusals": shared.refusals,
        "rss_start_mib": round(start_rss, 1), "rss_peak_mib": round(peak["rss"], 1),
        "rss_peak_growth_mib": round(peak["rss"] - start_rss, 1),
        "errors": sorted({r.outcome for r in shared.records if r.outcome != "ok"}), "failures": shared.failures,
        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end (shared machine)",
    }
    target = Path(os.environ.get("STYLEGAN_LANES_REPORT") or Path(tempfile.gettempdir()) / "stylegan2_lanes_load.json")
    target.write_text(json.dumps(report, indent=2))
    print("\n" + json.dumps(report, indent=2) + f"\n(written to {target})")

    assert not shared.failures, shared.failures
    assert all(not t.is_alive() for t in threads)
    assert not report["errors"], report["errors"]  # every request answered with its result
    assert sorted(shared.long_rows) == [["e4e encoder", "W+ optimization"]] * LONG_VISITORS
    assert len(shared.refusals) == 1 and "already have a long run" in shared.refusals[0]
    assert peak["running"] <= plan.long  # never more long runs at once than the lane's slots
    assert peak["waiting"] >= 2 and shared.positions  # long runs queued, and were told their position
    assert len(overtook) >= 5  # short requests did not queue behind long runs: they finished inside one
    assert report["short_p95_s"] < SHORT_P95_BOUND_S
    assert peak["rss"] - start_rss < RSS_GROWTH_BOUND_MB
