"""Two lanes for one shared machine: short work runs at once, long runs take turns.

Short work (alignment, the e4e/pSp encoders, edits, paste-back, export, status) takes a fraction of a second to a few
seconds; long runs (W / W+ optimization, PTI) take minutes to an hour on a CPU. When both share one queue, a 0.1 s e4e
request waits behind another visitor's whole W+ run (issue 17: 130 s). So:

- the **short lane** is a small number of concurrent requests (:attr:`LanePlan.short`), never held by a long run;
- the **long lane** (:class:`LongLane`) has a bounded number of slots chosen from the device (:func:`plan_for`), a FIFO
  queue with a visible position and an estimated start (:func:`estimated_starts`, from :class:`RunTimes`), a bound on
  how many may wait, and a per-visitor limit (one long run, running or waiting, per visitor);
- runs whose estimate passes :data:`CONFIRM_OVER_S` on a CPU are started only when the visitor confirms
  (:func:`needs_confirmation`).

Pure Python, no gradio: the app owns one :class:`LongLane` and one :class:`RunTimes` per built app (no module state).
"""
from __future__ import annotations

import heapq
import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Protocol, Sequence

CONFIRM_OVER_S = 300.0
"""On a CPU host a long run whose estimate passes this (5 minutes) starts only after the visitor confirms it.

Why confirm rather than refuse: the long lane is separate, so a long run no longer slows anybody's short work, and a
visitor who wants the *quality* result on a CPU-only Space has no other way to get it; but a run of half an hour or
more (FFHQ 1024 *balanced*/*quality* on two cores: 9-35 min measured in ``bench/results/cpu.md``) also delays every
long run queued behind it, so the visitor must see the estimate and say yes on purpose. Without an estimate (nothing
measured yet for that method on this host) there is nothing honest to show, so no confirmation is asked."""
RUN_TIMES_FILE = Path(__file__).resolve().parents[1] / "bench" / "results" / "runtimes.json"
"""Measured seconds per run, ``{"cpu"|"cuda": {method: {preset: seconds}}}`` for the FFHQ 1024 generator (the
benchmark's model); optional: without it, estimates come from the runs this server has finished."""
GPU_GB_PER_RUN = 8.0
"""GPU memory set aside per concurrent long run (PTI on FFHQ 1024: tuned generator copy + Adam state + LPIPS +
activations stays under ~6 GB; 8 leaves room for the short lane's encoders and edits)."""
MAX_GPU_SLOTS = 4
"""Batch-1 runs leave a big GPU underused, so a few at once raise throughput; past ~4 they mostly slow each other."""


class StopFlag(Protocol):
    """What a long run polls between steps (a ``threading.Event`` or a :class:`~inversion.stopping.StopToken`)."""

    def is_set(self) -> bool: ...


class LaneError(ValueError):
    """A long run that cannot be queued now (the visitor has one already, or the queue is full); plain message."""


# ------------------------------------------------------------------------------------------ sizing

@dataclass(frozen=True)
class LanePlan:
    """How many short requests run at once, how many long runs at once, and how many long runs may wait."""

    short: int
    long: int
    max_waiting: int


def plan_for(device_type: str, *, cpu_count: Optional[int] = None,
             gpu_memory_gb: Optional[float] = None) -> LanePlan:
    """Lane sizes for a device: on a CPU one long run at a time (two would each take twice as long, so nobody's
    result comes sooner, and both hold their memory) and as many short requests as cores (at least 2); on a GPU
    ``memory / GPU_GB_PER_RUN`` long runs (1 to :data:`MAX_GPU_SLOTS`) and 4 short requests. Up to 8 long runs (at
    least 4 per slot) may wait; more get a plain "try again later"."""
    if device_type == "cuda":
        memory = gpu_memory_gb if gpu_memory_gb is not None else _cuda_memory_gb()
        slots = max(1, min(MAX_GPU_SLOTS, int(memory // GPU_GB_PER_RUN)))
        return LanePlan(short=4, long=slots, max_waiting=max(8, 4 * slots))
    cores = cpu_count if cpu_count is not None else _cpu_count()
    return LanePlan(short=max(2, min(4, cores)), long=1, max_waiting=8)


def _cpu_count() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cuda_memory_gb() -> float:
    """Total memory of the current GPU; one run's share when it cannot be read here (e.g. the main process on
    ZeroGPU, where the GPU exists only inside ``spaces.GPU`` calls)."""
    import torch

    try:
        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30
    except (RuntimeError, AssertionError, AttributeError):
        pass
    return GPU_GB_PER_RUN


# ------------------------------------------------------------------------------------------ estimates

class RunTimes:
    """Estimated seconds of one long run: the mean of the runs this server finished for the same model family,
    method and preset; else the measured table (``runtimes.json``, FFHQ 1024) for this device type; else None."""

    def __init__(self, device_type: str, table: Optional[Mapping[str, Any]] = None, *,
                 table_family: str = "ffhq") -> None:
        self.device_type = device_type
        self.table_family = table_family
        self._table = {str(m): {str(p): float(s) for p, s in presets.items() if _positive(s)}
                       for m, presets in dict((table or {}).get(device_type) or {}).items()
                       if isinstance(presets, Mapping)}
        self._done: dict[tuple[str, str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, device_type: str, path: Path = RUN_TIMES_FILE) -> "RunTimes":
        """Read ``path`` when it is there and readable; an absent or broken file means "no table"."""
        try:
            table = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            table = None
        return cls(device_type, table if isinstance(table, Mapping) else None)

    def record(self, family: str, method: str, preset: str, seconds: float) -> None:
        """Add one finished run's time (cancelled runs are not recorded: they say nothing about the whole run)."""
        if not _positive(seconds):
            return
        key = (family, method, preset)
        with self._lock:
            total, n = self._done.get(key, (0.0, 0))
            self._done[key] = (total + float(seconds), n + 1)

    def estimate(self, family: str, method: str, preset: str) -> Optional[float]:
        """Expected seconds, or None when nothing is known for this run."""
        with self._lock:
            done = self._done.get((family, method, preset))
        if done is not None:
            return done[0] / done[1]
        if family == self.table_family:
            return self._table.get(method, {}).get(preset)
        return None

    def total(self, family: str, runs: Sequence[tuple[str, str]]) -> Optional[float]:
        """Expected seconds of several ``(method, preset)`` runs in a row; None when any one is unknown."""
        parts = [self.estimate(family, m, p) for m, p in runs]
        return None if any(p is None for p in parts) else float(sum(parts))


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def needs_confirmation(device_type: str, estimate_s: Optional[float], *, bound_s: float = CONFIRM_OVER_S) -> bool:
    """Whether a run must be confirmed first: on a CPU, when its estimate passes ``bound_s`` (see
    :data:`CONFIRM_OVER_S`). GPU runs of the app's presets stay within a few minutes and are never held back."""
    return device_type == "cpu" and estimate_s is not None and estimate_s > bound_s


def estimated_starts(remaining_s: Sequence[Optional[float]], waiting_s: Sequence[Optional[float]],
                     slots: int) -> list[Optional[float]]:
    """Seconds until each waiting run starts, in queue order: the running runs free their slots after
    ``remaining_s``, and each waiting run takes the first free slot for its estimate ``waiting_s``. A start that
    depends on an unknown (None) time is None."""
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    free = [math.inf if r is None else max(0.0, float(r)) for r in remaining_s]
    free += [0.0] * max(0, slots - len(free))
    heapq.heapify(free)
    starts: list[Optional[float]] = []
    for duration in waiting_s:
        at = heapq.heappop(free)
        starts.append(None if math.isinf(at) else at)
        heapq.heappush(free, math.inf if duration is None else at + max(0.0, float(duration)))
    return starts


def describe_wait(seconds: Optional[float]) -> str:
    """``"~3 min"``-style text for a wait or a run time; ``"unknown"`` without an estimate."""
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return f"~{max(1, round(seconds))} s"
    if seconds < 3600:
        return f"~{round(seconds / 60)} min"
    return f"~{seconds / 3600:.1f} h"


# ------------------------------------------------------------------------------------------ the long lane

@dataclass(eq=False)
class Ticket:
    """One long run's place in the lane: queued until :meth:`LongLane.wait` gives it a slot."""

    visitor: str
    run_id: str
    label: str
    estimate_s: Optional[float]
    queued_at: float
    started_at: Optional[float] = None
    released: bool = False


@dataclass(frozen=True)
class QueueInfo:
    """Where a waiting run stands: ``position`` 1 = next to start; ``starts_in_s`` None when not known."""

    position: int
    waiting: int
    running: int
    starts_in_s: Optional[float]

    def message(self, label: str) -> str:
        """One line for the visitor."""
        when = ("start time not known yet (no such run has finished here)" if self.starts_in_s is None
                else f"estimated start in {describe_wait(self.starts_in_s)}")
        return (f"{label}: waiting for the long-run lane, position {self.position} of {self.waiting} "
                f"({self.running} running); {when}. Encoder results, edits and downloads work meanwhile.")


@dataclass
class LongLane:
    """Bounded slots for long runs with a FIFO queue, a bound on waiting runs, and one run per visitor.

    Use: ``ticket = lane.join(visitor, run_id, label, estimate)``; ``for info in lane.wait(ticket, stop): ...``
    (yields while queued; returns once the run holds a slot, raises ``stopped()`` when ``stop`` is set);
    ``lane.release(ticket)`` in a ``finally`` (idempotent)."""

    slots: int
    max_waiting: int
    clock: Callable[[], float] = time.monotonic
    _running: list[Ticket] = field(default_factory=list)
    _waiting: list[Ticket] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        if self.slots < 1 or self.max_waiting < 0:
            raise ValueError(f"need slots >= 1 and max_waiting >= 0, got {self.slots}, {self.max_waiting}")

    def holder(self, visitor: str) -> Optional[Ticket]:
        """The visitor's ticket (running or waiting), if any."""
        with self._cond:
            return next((t for t in self._running + self._waiting if t.visitor == visitor), None)

    def join(self, visitor: str, run_id: str, label: str, estimate_s: Optional[float]) -> Ticket:
        """Queue a run (started at once when a slot is free and nobody waits). :class:`LaneError` when the visitor
        has a long run already, or when :attr:`max_waiting` runs wait."""
        with self._cond:
            mine = next((t for t in self._running + self._waiting if t.visitor == visitor), None)
            if mine is not None:
                where = ("running" if mine in self._running
                         else f"waiting at position {self._waiting.index(mine) + 1}")
                raise LaneError(f"You already have a long run ({mine.label}, {where}). One long run per visitor at "
                                "a time: wait for it to finish or press Stop. Encoders and edits work meanwhile.")
            if len(self._waiting) >= self.max_waiting and not self._free():
                raise LaneError(f"The long-run queue is full ({len(self._waiting)} runs waiting). Please try again "
                                "in a few minutes; the encoders (e4e, pSp) and edits work now.")
            ticket = Ticket(visitor, run_id, label, estimate_s, self.clock())
            self._waiting.append(ticket)
            self._promote()
            return ticket

    def wait(self, ticket: Ticket, stop: Optional[StopFlag] = None, *, poll_s: float = 0.5,
             stopped: Callable[[], BaseException] = lambda: RuntimeError("stopped")) -> Iterator[QueueInfo]:
        """Yield the ticket's :class:`QueueInfo` at least every ``poll_s`` seconds (and whenever it moves up) until
        it holds a slot; raises ``stopped()`` (after leaving the queue) when ``stop`` is set meanwhile."""
        while True:
            with self._cond:
                if ticket.released:
                    raise LaneError("This run left the long-run lane.")
                if ticket.started_at is not None:
                    return
                info = self._info(ticket)
            if stop is not None and stop.is_set():
                self.release(ticket)
                raise stopped()
            yield info
            with self._cond:
                if ticket.started_at is None and not ticket.released:
                    self._cond.wait(poll_s)

    def release(self, ticket: Ticket) -> None:
        """Give the slot (or the place in the queue) back; the next waiting run starts. Safe to call twice."""
        with self._cond:
            if ticket.released:
                return
            ticket.released = True
            for group in (self._running, self._waiting):
                if ticket in group:
                    group.remove(ticket)
            self._promote()
            self._cond.notify_all()

    def status(self) -> dict[str, Any]:
        """Counts and estimates for a status panel: slots, running, waiting, the next start."""
        with self._cond:
            starts = self._starts()
            return {"slots": self.slots, "running": len(self._running), "waiting": len(self._waiting),
                    "max_waiting": self.max_waiting, "next_start_s": starts[0] if starts else None,
                    "queue": [t.label for t in self._waiting]}

    def info(self, ticket: Ticket) -> Optional[QueueInfo]:
        """The ticket's place now (None once it runs or left)."""
        with self._cond:
            return self._info(ticket) if ticket in self._waiting else None

    # -- under the lock
    def _free(self) -> int:
        return self.slots - len(self._running)

    def _promote(self) -> None:
        while self._waiting and self._free() > 0:
            ticket = self._waiting.pop(0)
            ticket.started_at = self.clock()
            self._running.append(ticket)
            self._cond.notify_all()

    def _starts(self) -> list[Optional[float]]:
        now = self.clock()
        remaining = [None if t.estimate_s is None else t.estimate_s - (now - (t.started_at or now))
                     for t in self._running]
        return estimated_starts(remaining, [t.estimate_s for t in self._waiting], self.slots)

    def _info(self, ticket: Ticket) -> QueueInfo:
        index = self._waiting.index(ticket)
        return QueueInfo(position=index + 1, waiting=len(self._waiting), running=len(self._running),
                         starts_in_s=self._starts()[index])


__all__ = ["CONFIRM_OVER_S", "LaneError", "LanePlan", "LongLane", "QueueInfo", "RunTimes", "StopFlag", "Ticket",
           "describe_wait", "estimated_starts", "needs_confirmation", "plan_for"]
