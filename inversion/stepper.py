"""Run an optimization step many times without stalling the GPU queue.

A *step body* is a function that does one whole training step in place on static tensors (forward, losses,
backward, the optimizer update, and its bookkeeping: per-step losses into a device log, the stop flag).
:class:`CapturedStep` runs the body eagerly (CPU, tests, ``graph=False``) or records it once into a CUDA
graph and replays it: at batch 1 a StyleGAN2 step is hundreds of small kernels, and replaying them as one
graph removes the per-kernel launch cost (measured in ``bench/results/h200_ttq``).

:func:`run_steps` replays ``n`` steps and reads the device log back only every ``every`` steps (one
synchronisation per ``every`` steps instead of one per step): callbacks, the cancel event and the stop flag
are handled then. A stop decided on the device (early stop, LPIPS threshold) freezes the state at the
step where it fired (the body multiplies its learning rate by ``1 - done``), so the result does not depend on
``every``; a cancel is seen within ``every`` steps.

Warm-up before capture (needed for lazy initialisation: cuBLAS handles, the optimizer state) runs the body
``warmup`` times with the learning rate gated to 0, then ``reset()`` restores the initial state; the cost is
paid once per run (measured in the bench as ``capture_s``).
"""
from __future__ import annotations

import threading
from typing import Callable, Optional

import torch

from inversion.result import check_cancel

__all__ = ["CapturedStep", "run_steps", "adam", "graph_default"]


def graph_default(device: torch.device, compile: Optional[bool]) -> bool:
    """Whether to capture: ``compile`` if given, else on CUDA only (CPU has no launch overhead to remove)."""
    if compile is None:
        return device.type == "cuda"
    return bool(compile) and device.type == "cuda"


def adam(params: list[torch.Tensor], lr: torch.Tensor, *, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    """Adam with a tensor learning rate (set in place from the step body): fused and capturable on CUDA,
    fused on the CPU (both are single multi-tensor kernels rather than a loop over parameters)."""
    if lr.is_cuda:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True, capturable=True)
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)


class CapturedStep:
    """One step body, eager or as a CUDA graph (see the module docstring).

    ``gate`` is a device scalar the body multiplies its learning rate by (1 normally, 0 during warm-up);
    ``reset`` restores everything the warm-up touched (parameters, optimizer state, logs, counters).
    """

    def __init__(self, body: Callable[[], None], *, graph: bool, gate: torch.Tensor,
                 reset: Callable[[], None], warmup: int = 2) -> None:
        self.body = body
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        if not graph:
            return
        gate.fill_(0.0)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                body()
        torch.cuda.current_stream().wait_stream(side)
        gate.fill_(1.0)
        reset()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            body()

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.body()

    def release(self) -> None:
        """Free the graph's private memory pool."""
        if self.graph is not None:
            self.graph.reset()
            self.graph = None


def run_steps(step: CapturedStep, n: int, *, every: int, drain: Callable[[int, int], bool],
              before: Optional[Callable[[int], None]] = None, cancel: Optional[threading.Event] = None) -> int:
    """Run ``step`` up to ``n`` times; after every ``every`` steps (and at the end) call
    ``drain(first, last)`` for the steps ``first..last-1`` just run, which reads the logs, calls callbacks
    and returns True to stop. ``before(i)`` runs before step ``i`` (e.g. fills a latent-noise buffer).
    Returns the number of steps run. ``cancel`` is checked before the first step and after every drain
    (``drain`` itself should check it after each callback)."""
    check_cancel(cancel)
    first = 0
    for i in range(n):
        if before is not None:
            before(i)
        step()
        if (i + 1 - first) >= every or i + 1 == n:
            stop = drain(first, i + 1)
            check_cancel(cancel)
            first = i + 1
            if stop:
                return first
    return n
