"""Choose the compute device once, at the application edge, and set the backend flags with it.

:func:`setup_device` is the one entry point the app, the CLI and ``bench/`` share, so the benchmark measures
the configuration users run. On CUDA it sets:

- ``cudnn.benchmark = False``: cuDNN's autotuner tries every algorithm with whatever workspace it asks for
  (the issue measured a 34 GB peak for one W+ run and 68 GB for a batch-8 synthesis with it on; 2.2 GB off).
  The heuristic choice is what the measured numbers in ``bench/results`` use.
- ``CUDNN_CONV_WSCAP_DBG`` (cuDNN's convolution-workspace cap, MiB; only if the caller did not set it and
  cuDNN is not initialised yet): a second bound on the same blow-up should benchmark mode be turned on.
- TF32 for matmuls and convolutions (``float32_matmul_precision("high")``): fp32 accuracy of the codes and
  Adam state is kept; products run on tensor cores (measured deviations in ``tests/test_stylegan2.py``
  are for CPU float32; on the GPU see ``bench/results``).

On the CPU nothing global is changed. These are process-wide switches by nature (PyTorch has no per-call
form), which is why exactly one function sets them.
"""
from __future__ import annotations

import os
from typing import Union

import torch

CUDNN_WORKSPACE_CAP_MIB = 1024


def default_device() -> torch.device:
    """CUDA when present, else CPU. Library code takes the device from its inputs instead."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_device(choice: Union[str, torch.device] = "auto") -> torch.device:
    """``"auto"`` -> :func:`default_device`; ``"cpu"``/``"cuda"``/``"cuda:1"`` as given (CUDA must exist)."""
    if isinstance(choice, torch.device):
        device = choice
    elif choice == "auto":
        device = default_device()
    else:
        try:
            device = torch.device(choice)
        except RuntimeError:
            raise ValueError(f"unknown device {choice!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was asked for but no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device}; use auto, cpu or cuda")
    return device


def configure_backends(device: torch.device) -> dict[str, object]:
    """Set the shared backend flags for ``device`` (see the module docstring); returns what was set."""
    if device.type != "cuda":
        return {"device": str(device)}
    os.environ.setdefault("CUDNN_CONV_WSCAP_DBG", str(CUDNN_WORKSPACE_CAP_MIB))
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    return {"device": str(device), "cudnn_benchmark": False, "tf32": True,
            "cudnn_workspace_cap_mib": int(os.environ["CUDNN_CONV_WSCAP_DBG"])}


def setup_device(choice: Union[str, torch.device] = "auto") -> torch.device:
    """Pick the device (``"auto"``, ``"cpu"``, ``"cuda"``) and set the backend flags every entry point shares."""
    device = resolve_device(choice)
    configure_backends(device)
    return device


def use_bf16(device: torch.device) -> bool:
    """bf16 autocast for the per-image methods where it measured faster.

    CPUs with native bf16 (AVX512-BF16 / AMX: 1024 fwd+bwd 1.3 s vs 2.8 s fp32 on 2 cores). CUDA: the whole
    step runs as one CUDA graph there, and bf16 measured faster than TF32 fp32 in ``bench/results/h200_ttq``
    (eager, launch-bound, it was the other way round: 30.7 ms fp32 vs 40.5 ms bf16 per W+ step).
    """
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return device.type == "cuda"
