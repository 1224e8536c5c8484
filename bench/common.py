"""Shared pieces of the benchmark: timing, peak memory, machine description, seeded random models.

Timing follows the usual GPU method: warm-up calls first (cuDNN autotuning, allocator growth, lazy init),
then ``repeats`` timed calls, each bracketed by CUDA events (GPU) or ``perf_counter`` after a synchronize
(CPU); the median is the number reported. A per-measurement time budget cuts the repeats short (at least
one timed call always runs) so a slow machine still finishes.
"""
from __future__ import annotations

import math
import os
import platform
import resource
import statistics
import subprocess
import time
import zlib
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import torch

MiB = 1024 * 1024


# ----------------------------------------------------------------------------------------------- timing

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], *, device: torch.device, warmup: int = 2, repeats: int = 5,
              budget_s: float = 60.0) -> dict[str, Any]:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls.

    Warm-up and timed calls each stop early (after at least one timed call) once ``budget_s`` is spent. Returns
    ``{"median_s", "min_s", "max_s", "n", "times_s"}``.
    """
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
        sync(device)
        if time.perf_counter() - start > budget_s:
            break
    start = time.perf_counter()  # the timed repeats get their own budget (warm-up may include autotuning)
    times: list[float] = []
    for _ in range(max(1, repeats)):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "n": len(times),
            "times_s": [round(t, 6) for t in times]}


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) / 1000.0
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_pair(fn_a: Callable[[], Any], fn_b: Callable[[], Any], *, device: torch.device, warmup: int = 2,
              repeats: int = 5, budget_s: float = 60.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Time two functions interleaved (a b, b a, a b, ...) in one process, so that a machine whose load changes
    (a shared CPU) slows both alike. Returns two ``time_call``-style dicts."""
    start = time.perf_counter()
    for _ in range(warmup):
        fn_a()
        fn_b()
        sync(device)
        if time.perf_counter() - start > budget_s:
            break
    start = time.perf_counter()
    ta: list[float] = []
    tb: list[float] = []
    for i in range(max(1, repeats)):
        order = ((fn_a, ta), (fn_b, tb)) if i % 2 == 0 else ((fn_b, tb), (fn_a, ta))
        for fn, acc in order:
            acc.append(_timed(fn, device))
        if time.perf_counter() - start > budget_s:
            break

    def summary(times: list[float]) -> dict[str, Any]:
        return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "n": len(times),
                "times_s": [round(t, 6) for t in times]}
    return summary(ta), summary(tb)


# ----------------------------------------------------------------------------------------------- memory

def _read_status_kib(field: str = "VmHWM") -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux >= 4.0: reset the peak resident set size (VmHWM)
        return True
    except OSError:
        return False


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, Any]]:
    """Measure the peak memory of the block: GPU ``max_memory_allocated`` (MiB) on CUDA; on CPU the
    process's peak resident set (VmHWM after resetting it, else ``ru_maxrss`` since start, labelled)."""
    out: dict[str, Any] = {}
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        try:
            yield out
        finally:
            sync(device)
            out["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / MiB, 1)
            out["peak_mem_above_start_mb"] = round((torch.cuda.max_memory_allocated(device) - base) / MiB, 1)
            out["peak_mem_kind"] = "cuda max_memory_allocated"
        return
    reset = _reset_hwm()
    rss0 = _read_status_kib("VmRSS")
    try:
        yield out
    finally:
        hwm = _read_status_kib("VmHWM") if reset else None
        if hwm is not None:
            out["peak_mem_mb"] = round(hwm / 1024, 1)
            if rss0 is not None:
                out["peak_mem_above_start_mb"] = round((hwm - rss0) / 1024, 1)
            out["peak_mem_kind"] = "process peak RSS (VmHWM, reset before; includes every loaded model)"
        else:
            out["peak_mem_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            out["peak_mem_kind"] = "process peak RSS since start (ru_maxrss)"


# ----------------------------------------------------------------------------------------------- machine

def machine_info(device: torch.device) -> dict[str, Any]:
    """What ran the numbers: CPU, load average, torch/CUDA versions, GPU name, math-mode flags."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "device": str(device),
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu_model"] = names[0] if names else platform.processor()
    except OSError:
        info["cpu_model"] = platform.processor()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update({
            "gpu": props.name, "gpu_mem_gb": round(props.total_memory / 1e9, 1),
            "sm_count": props.multi_processor_count, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        })
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,"
                                  "temperature.gpu,power.draw", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            info["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return info


# ----------------------------------------------------------------------------------------------- models

def ffhq_generator(size: int = 1024, *, seed: int = 0, device: torch.device = torch.device("cpu")):
    """Config-f StyleGAN2 (FFHQ architecture at ``size``) with seeded random weights (the constructor's own
    init, as rosinality's), noise gains set to 0.1 so the noise path is live. Frozen, eval mode."""
    from inversion.stylegan2 import Generator

    torch.manual_seed(seed)
    g = Generator(size)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.1)
    return g.to(device).eval().requires_grad_(False)


def encoder(kind: str, *, n_styles: int = 18, seed: int = 1, device: torch.device = torch.device("cpu")):
    """pSp (``"psp"``) or e4e (``"e4e"``) IR-SE50 encoder (18 styles = FFHQ 1024), seeded default init."""
    from inversion.encoders import E4EEncoder, PSPEncoder

    torch.manual_seed(seed)
    enc = (PSPEncoder if kind == "psp" else E4EEncoder)(n_styles=n_styles)
    return enc.to(device).eval().requires_grad_(False)


def _conv_fill(key: str, t: torch.Tensor) -> torch.Tensor:
    """tests/reference_fill.py's ``conv`` rule: He-scaled normal from a CRC32(key)-seeded generator."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    r = torch.randn(tuple(t.shape), generator=g, dtype=torch.float64)
    if t.dim() >= 2:
        return (r * math.sqrt(2.0 / math.prod(t.shape[1:]))).to(t.dtype)
    return (0.1 * r).to(t.dtype)


def filled_backbone(net: str = "vgg") -> dict[str, torch.Tensor]:
    """Deterministic stand-in trunk weights (torchvision ``features.*`` keys) for LPIPS — no download."""
    from inversion.lpips import backbone_keys

    return {k: _conv_fill(k, torch.empty(shape)) for k, shape in backbone_keys(net).items()}


def lpips_model(net: str = "vgg", *, device: torch.device = torch.device("cpu"), real: bool = True):
    """LPIPS with the real ImageNet trunk when it is already on disk (HF cache / weights dir, no download),
    else the deterministic stand-in trunk. Returns ``(model, label)``."""
    from inversion.lpips import LPIPS

    model = LPIPS(net)
    label = f"LPIPS-{net} with stand-in trunk (seeded He-init, not ImageNet weights)"
    if real and net == "vgg":
        try:
            from inversion import checkpoints

            path = checkpoints.fetch("vgg16", offline=True)
            model.load_backbone(checkpoints.load_safetensors_subset(path, "features."))
            label = "LPIPS-vgg v0.1 (real ImageNet VGG16 trunk)"
        except Exception:  # noqa: BLE001 - any failure means: not available offline
            model.load_backbone(filled_backbone(net))
    else:
        model.load_backbone(filled_backbone(net))
    return model.to(device).eval(), label


def known_target(g, *, seed: int = 123, psi: float = 0.7) -> tuple[torch.Tensor, torch.Tensor]:
    """A target with a known W+ code: a seeded w truncated toward the mean (``psi``), small per-layer jitter,
    rendered with FRESH seeded noise maps (not the stored ones an inversion uses), ``(1, 3, S, S)``."""
    device = g.input.input.device
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mean = g.mean_latent(2000, generator=torch.Generator().manual_seed(7))
        z = torch.randn(1, g.style_dim, generator=gen).to(device)
        w = mean + psi * (g.mapping(z) - mean)
        jitter = 0.1 * torch.randn(1, g.n_latent, g.style_dim, generator=gen).to(device) * (w - mean).std()
        ws = w[:, None].expand(1, g.n_latent, g.style_dim) + jitter
        noise = [torch.randn(b.shape, generator=gen).to(device) for b in g.noises.as_list()]
        return ws, g.synthesis(ws, noise)


def free_cuda() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------- run context

class Context:
    """Device, repeat counts and time budgets of one benchmark process, plus its log and error list.

    ``begin(part, seconds)`` opens a part with its own budget (never past the global deadline);
    ``out_of_time(part)`` tells the measuring loops to stop early.
    """

    def __init__(self, device: torch.device, *, quick: bool, deadline_s: float, warmup: int = 2,
                 repeats: int = 5, call_budget: float = 30.0, log=print) -> None:
        self.device = device
        self.quick = quick
        self.warmup = warmup
        self.repeats = repeats
        self.call_budget = call_budget
        self.t0 = time.monotonic()
        self.deadline = self.t0 + deadline_s
        self.part_deadline: dict[str, float] = {}
        self.errors: list[str] = []
        self._log = log

    def log(self, msg: str) -> None:
        self._log(f"[{time.monotonic() - self.t0:6.1f}s] {msg}")

    def error(self, what: str, err: BaseException) -> None:
        text = f"{what}: {type(err).__name__}: {str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}"
        self.errors.append(text)
        self.log("  ERROR " + text)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def begin(self, part: str, seconds: float) -> None:
        self.part_deadline[part] = min(self.deadline, time.monotonic() + seconds)
        self.log(f"== {part} (budget {min(seconds, self.remaining()):.0f} s)")

    def out_of_time(self, part: str) -> bool:
        return time.monotonic() > self.part_deadline.get(part, self.deadline)
