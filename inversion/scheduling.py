"""One visitor's inversion request through the two lanes (:mod:`inversion.lanes`): the one-pass encoders first, in
the short lane; then the optimizing methods in the long lane (queued, with position and estimated start, one long run
per visitor, a confirmation for very long CPU runs); a stop flag polled between steps and while queued.

No gradio here: :func:`run_in_lanes` yields plain events (results, skips, queue positions, a hold for confirmation)
and the app turns them into page updates. The two compute functions are passed in, so the app can wrap them in
``spaces.GPU`` (another process on ZeroGPU: the stop flag is a :class:`~inversion.stopping.StopToken` for that).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

from inversion.lanes import (LaneError, LanePlan, LongLane, QueueInfo, RunTimes, StopFlag, describe_wait,
                             needs_confirmation, plan_for)
from inversion.result import Cancelled
from inversion.stopping import StopBoard


@dataclass
class Lanes:
    """What one app owns for scheduling: the lane sizes, the long lane, run-time estimates, the stop flags and the
    gate that bounds concurrent short computations (the encoders inside ``/invert`` and the short events)."""

    device_type: str
    plan: LanePlan
    long: LongLane
    times: RunTimes
    board: StopBoard
    short_gate: threading.BoundedSemaphore = field(repr=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.short_gate is None:
            self.short_gate = threading.BoundedSemaphore(self.plan.short)

    @classmethod
    def create(cls, device_type: str, *, plan: Optional[LanePlan] = None,
               times: Optional[RunTimes] = None, board: Optional[StopBoard] = None) -> "Lanes":
        """Lanes sized for the device (:func:`~inversion.lanes.plan_for`) unless ``plan`` is given; estimates from
        ``bench/results/runtimes.json`` unless ``times`` is given."""
        plan = plan or plan_for(device_type)
        return cls(device_type=device_type, plan=plan, long=LongLane(plan.long, plan.max_waiting),
                   times=times if times is not None else RunTimes.from_file(device_type),
                   board=board if board is not None else StopBoard())

    def short_work(self) -> threading.BoundedSemaphore:
        """``with lanes.short_work(): ...`` around a short computation."""
        return self.short_gate


@dataclass(frozen=True)
class Queued:
    """The long part waits in the lane; ``info.message(label)`` says where."""

    info: QueueInfo
    label: str

    @property
    def message(self) -> str:
        return self.info.message(self.label)


@dataclass(frozen=True)
class Held:
    """The long part was not started: on this CPU its estimate passes the bound and the visitor did not confirm."""

    methods: tuple[str, ...]
    estimate_s: float
    message: str


@dataclass(frozen=True)
class Started:
    """The long part holds a slot now and runs."""

    label: str


Event = Union[Queued, Held, Started, object]
"""What :func:`run_in_lanes` yields: these, plus whatever the compute functions yield (results, skips)."""
RunFn = Callable[[Sequence[str], StopFlag], Iterable[object]]
"""``run(methods, stop)``: runs the methods in order, yielding one item per method, polling ``stop`` between steps."""


def split_methods(methods: Sequence[str], is_long: Callable[[str], bool]) -> tuple[list[str], list[str]]:
    """``(short, long)`` keeping the order: one-pass methods never enter the long lane."""
    return [m for m in methods if not is_long(m)], [m for m in methods if is_long(m)]


def check_visitor(lanes: Lanes, visitor: str, long_methods: Sequence[str]) -> None:
    """:class:`~inversion.lanes.LaneError` (plain message) when the visitor asks for a long run while one of theirs
    is running or queued; checked before anything runs."""
    if not long_methods:
        return
    mine = lanes.long.holder(visitor)
    if mine is not None:
        where = "running" if mine.started_at is not None else "waiting in the queue"
        raise LaneError(f"You already have a long run ({mine.label}, {where}). One long run per visitor at a time: "
                        "wait for it to finish or press Stop. Encoders and edits work meanwhile.")


def run_in_lanes(lanes: Lanes, *, visitor: str, run_id: str, stop: StopFlag, family: str,
                 methods: Sequence[str], presets: Mapping[str, str], labels: Mapping[str, str],
                 is_long: Callable[[str], bool], run_short: RunFn, run_long: RunFn,
                 allow_long: bool = False, record: Callable[[object], Optional[tuple[str, str, float]]] = lambda item: None,
                 poll_s: float = 0.5) -> Iterator[Event]:
    """Run ``methods`` (already in run order) for one visitor: the short ones at once (under the short gate), then
    the long ones in the long lane. Yields the compute functions' items and :class:`Queued` / :class:`Started` /
    :class:`Held` events. ``record(item)`` returns ``(method, preset, seconds)`` for a finished run (its time feeds
    the estimates) or None. Raises :class:`~inversion.lanes.LaneError` when the visitor may not queue (checked
    before anything runs) or the queue is full, and :class:`~inversion.result.Cancelled` when ``stop`` is set."""
    short, long = split_methods(methods, is_long)
    check_visitor(lanes, visitor, long)
    if short:
        with lanes.short_work():
            yield from run_short(short, stop)
    if not long:
        return
    estimate = lanes.times.total(family, [(m, presets[m]) for m in long])
    label = " + ".join(f"{labels[m]} ({presets[m]})" for m in long)
    if not allow_long and needs_confirmation(lanes.device_type, estimate):
        yield Held(tuple(long), float(estimate), (
            f"{label} takes {describe_wait(estimate)} on this CPU server (measured), plus any wait in the queue. "
            "It was not started: to run it anyway, confirm (tick *Allow runs longer than 5 minutes*) and press Run "
            "again, or pick the *fast* preset."))
        return
    ticket = lanes.long.join(visitor, run_id, label, estimate)
    try:
        for info in lanes.long.wait(ticket, stop, poll_s=poll_s, stopped=lambda: Cancelled("stopped while queued")):
            yield Queued(info, label)
        yield Started(label)
        for item in run_long(long, stop):
            done = record(item)
            if done is not None:
                lanes.times.record(family, *done)
            yield item
    finally:
        lanes.long.release(ticket)


__all__ = ["Event", "Held", "Lanes", "Queued", "RunFn", "Started", "check_visitor", "run_in_lanes", "split_methods"]
