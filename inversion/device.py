"""Choose the compute device once, at the application edge."""
from __future__ import annotations

import torch


def default_device() -> torch.device:
    """CUDA when present, else CPU. Library code takes the device from its inputs instead."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
