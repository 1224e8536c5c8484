"""The long-run lane (slots, FIFO queue, estimated starts, per-visitor limit, confirmation bound) and the stop flags
that reach a run in another process (as on ZeroGPU)."""
from __future__ import annotations

import json
import multiprocessing as mp
import pickle
import threading
import time

import pytest

from inversion.lanes import (CONFIRM_OVER_S, LaneError, LongLane, RunTimes, describe_wait, estimated_starts,
                             needs_confirmation, plan_for)
from inversion.stopping import StopBoard, StopToken


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plan_follows_the_device():
    assert plan_for("cpu", cpu_count=2) == plan_for("cpu", cpu_count=1)
    cpu = plan_for("cpu", cpu_count=2)
    assert cpu.long == 1 and cpu.short == 2 and cpu.max_waiting >= 1
    assert plan_for("cpu", cpu_count=16).short == 4
    assert plan_for("cuda", gpu_memory_gb=16).long == 2
    assert plan_for("cuda", gpu_memory_gb=140).long == 4  # capped
    assert plan_for("cuda", gpu_memory_gb=6).long == 1  # always at least one


def test_estimated_starts_fill_the_first_free_slot():
    # one slot, a run with 100 s left, then runs of 50 and 30 s waiting: they start at 100, 150, 180
    assert estimated_starts([100.0], [50.0, 30.0, 10.0], 1) == [100.0, 150.0, 180.0]
    # two slots (40 s and 10 s left): the first waiting run takes the slot free at 10 s
    assert estimated_starts([40.0, 10.0], [50.0, 5.0, 5.0], 2) == [10.0, 40.0, 45.0]
    # an unknown time makes the starts that depend on it unknown, not the others
    assert estimated_starts([None, 20.0], [None, 5.0, 5.0], 2) == [20.0, None, None]
    assert estimated_starts([], [5.0], 1) == [0.0]


def test_run_times_prefer_this_servers_runs(tmp_path):
    table = tmp_path / "runtimes.json"
    table.write_text(json.dumps({"cpu": {"w+": {"quality": 2092.2, "fast": 65.1}, "pti": {"fast": -1}},
                                 "cuda": {"w+": {"quality": 30.0}}}))
    times = RunTimes.from_file("cpu", table)
    assert times.estimate("ffhq", "w+", "quality") == pytest.approx(2092.2)
    assert times.estimate("builtin", "w+", "quality") is None  # the table is the FFHQ 1024 benchmark
    assert times.estimate("ffhq", "pti", "fast") is None  # nonsense values are dropped
    times.record("ffhq", "w+", "fast", 50.0)
    times.record("ffhq", "w+", "fast", 70.0)
    assert times.estimate("ffhq", "w+", "fast") == pytest.approx(60.0)  # measured here beats the table
    assert times.total("ffhq", [("w+", "fast"), ("w+", "quality")]) == pytest.approx(2152.2)
    assert times.total("ffhq", [("w+", "fast"), ("pti", "fast")]) is None
    assert RunTimes.from_file("cuda", table).estimate("ffhq", "w+", "quality") == 30.0
    (tmp_path / "broken.json").write_text("{not json")
    assert RunTimes.from_file("cpu", tmp_path / "broken.json").estimate("ffhq", "w+", "quality") is None
    assert RunTimes.from_file("cpu", tmp_path / "absent.json").estimate("ffhq", "w+", "quality") is None


def test_confirmation_only_for_long_cpu_runs():
    assert needs_confirmation("cpu", CONFIRM_OVER_S + 1)
    assert not needs_confirmation("cpu", CONFIRM_OVER_S - 1)
    assert not needs_confirmation("cpu", None)  # nothing measured: no estimate to show
    assert not needs_confirmation("cuda", 10 * CONFIRM_OVER_S)
    assert describe_wait(2092.2) == "~35 min" and describe_wait(12) == "~12 s" and describe_wait(None) == "unknown"


def test_lane_is_fifo_with_positions_and_estimates():
    clock = Clock()
    lane = LongLane(slots=1, max_waiting=3, clock=clock)
    a = lane.join("visitor-a", "a" * 16, "W+ optimization", 100.0)
    assert a.started_at == clock.now  # a free slot: runs at once
    clock.now += 30
    b = lane.join("visitor-b", "b" * 16, "PTI", 50.0)
    c = lane.join("visitor-c", "c" * 16, "W optimization", None)
    d = lane.join("visitor-d", "d" * 16, "W optimization", 10.0)
    assert (lane.info(b).position, lane.info(c).position, lane.info(d).position) == (1, 2, 3)
    assert lane.info(b).starts_in_s == pytest.approx(70.0)  # a has 100 - 30 s left
    assert lane.info(c).starts_in_s == pytest.approx(120.0)
    assert lane.info(d).starts_in_s is None  # behind a run of unknown length
    assert "position 1 of 3" in lane.info(b).message("PTI") and "~1 min" in lane.info(b).message("PTI")
    with pytest.raises(LaneError, match="queue is full"):
        lane.join("visitor-e", "e" * 16, "PTI", 1.0)
    lane.release(a)
    assert b.started_at is not None and lane.info(c).position == 1
    lane.release(a)  # twice is harmless
    assert lane.status()["running"] == 1 and lane.status()["waiting"] == 2


def test_one_long_run_per_visitor():
    lane = LongLane(slots=2, max_waiting=4)
    first = lane.join("visitor-a", "a" * 16, "W+ optimization", None)
    with pytest.raises(LaneError, match="already have a long run .W\\+ optimization, running"):
        lane.join("visitor-a", "b" * 16, "PTI", None)
    lane.release(first)
    assert lane.join("visitor-a", "c" * 16, "PTI", None).started_at is not None


def test_waiting_run_starts_when_the_slot_frees_and_leaves_on_stop(tmp_path):
    lane = LongLane(slots=1, max_waiting=4)
    board = StopBoard(tmp_path / "stops")
    running = lane.join("a", "a" * 16, "W+", None)
    waiting = lane.join("b", "b" * 16, "W+", None)
    seen = []
    started = threading.Event()

    def wait_b() -> None:
        for info in lane.wait(waiting, poll_s=0.05):
            seen.append(info.position)
        started.set()

    t = threading.Thread(target=wait_b)
    t.start()
    time.sleep(0.2)
    assert not started.is_set() and seen and set(seen) == {1}
    lane.release(running)
    assert started.wait(5)
    t.join(5)
    assert waiting.started_at is not None

    third = lane.join("c", "c" * 16, "W+", None)  # b runs; c waits, then its visitor presses Stop
    run_id, token = board.new_run()
    board.stop(run_id)
    with pytest.raises(KeyError):
        list(lane.wait(third, token, poll_s=0.05, stopped=lambda: KeyError("stopped")))
    assert lane.status()["waiting"] == 0 and third.released


def test_stop_board_ids_and_sweep(tmp_path):
    board = StopBoard(tmp_path / "stops")
    run_id, token = board.new_run()
    assert not token.is_set()
    assert board.stop(run_id) and token.is_set()
    assert pickle.loads(pickle.dumps(token)) == token and pickle.loads(pickle.dumps(token)).is_set()
    for bad in ("../../etc/passwd", "", None, "ABCDEF0123456789", "a" * 17):
        assert not board.stop(bad)
    assert board.sweep(max_age_s=3600) == 0 and board.sweep(max_age_s=0, now=time.time() + 1) == 1
    assert not token.is_set()
    token.set()
    token.discard()
    assert not token.is_set()
    board.close()
    assert not board.folder.exists()
    token.set()  # a closed board: setting is a no-op, not an error
    assert not token.is_set()


def _optimize_in_child(token: StopToken, steps: "mp.Queue", go: "mp.Event") -> None:
    """A W+ run in a separate process (as spaces.GPU runs it on ZeroGPU), reporting each step and how it ended;
    after step 3 it waits until the parent has pressed Stop."""
    import torch

    from inversion.methods import invert
    from inversion.result import Cancelled
    from tiny_models import SIZE, tiny_model_set

    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    def callback(step: int, total: int, metrics: dict) -> None:
        steps.put(("step", step))
        if step == 3:
            go.wait(120)

    try:
        invert(tiny_model_set(), "w+", image, preset="quality", callback=callback, cancel=token)
        steps.put(("finished", None))
    except Cancelled:
        steps.put(("cancelled", None))


def test_stop_reaches_a_run_in_another_process(tmp_path):
    board = StopBoard(tmp_path / "stops")
    run_id, token = board.new_run()
    ctx = mp.get_context("spawn")
    queue, go = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=_optimize_in_child, args=(token, queue, go))
    child.start()
    try:
        events = []
        while not events or events[-1] != ("step", 3):
            events.append(queue.get(timeout=120))
        board.stop(run_id)  # what the Stop button does, in this (the app's) process
        go.set()
        events.append(queue.get(timeout=60))
        assert events[-1] == ("cancelled", None)  # step 4 never ran: stopped within one step
        assert [s for kind, s in events if kind == "step"] == [1, 2, 3]
        child.join(30)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()


# ------------------------------------------------------------------------------------------ one request in the lanes

def _lanes(tmp_path, estimates=None, device="cpu"):
    from inversion.lanes import LanePlan
    from inversion.scheduling import Lanes

    return Lanes.create(device, plan=LanePlan(short=2, long=1, max_waiting=2),
                        times=RunTimes(device, estimates, table_family="tiny"), board=StopBoard(tmp_path / "s"))


def _request(lanes, visitor, methods, *, run_long=None, allow_long=False, stop=None, presets=None):
    from inversion.scheduling import run_in_lanes

    def run(ms, flag):
        for m in ms:
            yield ("result", m)

    run_id, token = lanes.board.new_run()
    return run_in_lanes(lanes, visitor=visitor, run_id=run_id, stop=stop or token, family="tiny", methods=methods,
                        presets=presets or {m: "fast" for m in methods}, labels={m: m.upper() for m in methods},
                        is_long=lambda m: m in ("w", "w+", "pti"), run_short=run, run_long=run_long or run,
                        allow_long=allow_long, record=lambda item: (item[1], "fast", 12.0), poll_s=0.02)


def test_encoders_first_then_the_long_lane(tmp_path):
    from inversion.scheduling import Started

    lanes = _lanes(tmp_path)
    events = list(_request(lanes, "a", ["e4e", "psp", "w+"]))
    assert events[:2] == [("result", "e4e"), ("result", "psp")]
    assert isinstance(events[2], Started) and events[3] == ("result", "w+")
    assert lanes.times.estimate("tiny", "w+", "fast") == 12.0  # its time now feeds the estimates
    assert lanes.long.status()["running"] == 0  # the slot was given back


def test_long_cpu_run_is_held_until_confirmed(tmp_path):
    from inversion.scheduling import Held

    lanes = _lanes(tmp_path, {"cpu": {"w+": {"quality": 1800.0}}})
    events = list(_request(lanes, "a", ["e4e", "w+"], presets={"e4e": "default", "w+": "quality"}))
    assert events[0] == ("result", "e4e") and isinstance(events[1], Held) and len(events) == 2
    assert "~30 min" in events[1].message
    events = list(_request(lanes, "a", ["w+"], presets={"w+": "quality"}, allow_long=True))
    assert events[-1] == ("result", "w+")
    gpu = _lanes(tmp_path, {"cuda": {"w+": {"quality": 1800.0}}}, device="cuda")
    assert list(_request(gpu, "a", ["w+"], presets={"w+": "quality"}))[-1] == ("result", "w+")


def test_second_long_request_of_a_visitor_and_a_queued_stop(tmp_path):
    from inversion.result import Cancelled
    from inversion.scheduling import Queued

    lanes = _lanes(tmp_path)
    release = threading.Event()

    def slow(ms, flag):
        release.wait(10)
        for m in ms:
            yield ("result", m)

    first = _request(lanes, "a", ["w"], run_long=slow)
    holder = threading.Thread(target=lambda: list(first))
    holder.start()
    _wait = time.monotonic() + 5
    while lanes.long.status()["running"] == 0 and time.monotonic() < _wait:
        time.sleep(0.01)
    with pytest.raises(LaneError, match="already have a long run"):
        next(_request(lanes, "a", ["e4e", "w+"]))  # refused before its encoder runs
    run_id, token = lanes.board.new_run()
    waiting = _request(lanes, "b", ["w+"], stop=token)
    first_event = next(waiting)
    assert isinstance(first_event, Queued) and first_event.info.position == 1
    token.set()
    with pytest.raises(Cancelled):
        list(waiting)
    assert lanes.long.status()["waiting"] == 0
    release.set()
    holder.join(10)
    assert lanes.long.status()["running"] == 0
