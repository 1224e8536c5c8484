# Copied verbatim (below this header) from /work/shared/reference/fill.py, the shared reference test tooling
# (seen from the project as ../shared/reference/fill.py). Kept here so fresh clones without ../shared can
# regenerate the deterministic weights that the golden data in tests/data/ was computed with.
"""Deterministic weight fill for checkpoint-parity tests.

Real checkpoints (StyleGAN2 FFHQ, pSp, e4e, IR-SE50, VGG16/AlexNet for LPIPS)
are too large to ship and cannot be downloaded here. Instead, a reference
implementation and ours are both loaded with the SAME state dict, produced by
this fill from nothing but the key names and shapes, and their outputs are
compared. Matching outputs prove that the key layout and the forward pass
agree with the reference, so the real checkpoint will load and run the same.

fill_state_dict(sd, family) -> new dict with the same keys, shapes and dtypes.

Every floating tensor is drawn from its own generator, seeded with the CRC32
of its key, so the value of a key never depends on which other keys exist:

    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    r = torch.randn(shape, generator=g, dtype=torch.float64)

and then shaped by the rules below (first rule that matches wins).

family="stylegan2"  (rosinality-format Generator keys, also under a prefix
                     such as "decoder." inside pSp/e4e checkpoints)
    key ends with ".kernel"            -> kept as given (fixed FIR blur kernel)
    key ends with "modulation.bias"    -> 1 + 0.1 * r
    tensor has >= 2 dims               -> r            (equalized-lr weights,
                                                        constant input, noises)
    otherwise (1-D biases, noise gain) -> 0.1 * r

family="conv"  (IR-SE50 encoders of pSp/e4e, ArcFace IR-SE50, VGG16, AlexNet,
                LPIPS heads)
    key ends with "running_var"        -> 1 + 0.1 * |r|
    key ends with "running_mean"       -> 0.1 * r
    key ends with "linear.weight" and has 2 dims (EqualLinear in the
        GradualStyleBlocks of pSp/e4e) -> r
    tensor has >= 2 dims               -> r * sqrt(2 / fan_in),
                                          fan_in = prod(shape[1:])
    key ends with "weight" (1-D: BatchNorm gamma, PReLU slope)
                                       -> 1 + 0.1 * r
    otherwise (1-D biases)             -> 0.1 * r

Non-floating tensors (num_batches_tracked) are copied unchanged.
The result is cast back to each tensor's original dtype.

family="auto" applies "stylegan2" to keys under "decoder." and "conv" to
the rest, which is what a whole pSp/e4e checkpoint state_dict needs.
"""
from __future__ import annotations

import math
import zlib

import torch

__all__ = ["fill_state_dict", "fill_tensor"]


def _draw(key: str, shape) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    return torch.randn(tuple(shape), generator=g, dtype=torch.float64)


def fill_tensor(key: str, t: torch.Tensor, family: str) -> torch.Tensor:
    if not t.is_floating_point():
        return t.clone()
    if family == "auto":
        family = "stylegan2" if key.startswith("decoder.") else "conv"
    if family == "stylegan2":
        if key.endswith(".kernel"):
            return t.clone()
        r = _draw(key, t.shape)
        if key.endswith("modulation.bias"):
            v = 1 + 0.1 * r
        elif t.dim() >= 2:
            v = r
        else:
            v = 0.1 * r
    elif family == "conv":
        r = _draw(key, t.shape)
        if key.endswith("running_var"):
            v = 1 + 0.1 * r.abs()
        elif key.endswith("running_mean"):
            v = 0.1 * r
        elif key.endswith("linear.weight") and t.dim() == 2:
            v = r
        elif t.dim() >= 2:
            fan_in = math.prod(t.shape[1:])
            v = r * math.sqrt(2.0 / fan_in)
        elif key.endswith("weight"):
            v = 1 + 0.1 * r
        else:
            v = 0.1 * r
    else:
        raise ValueError(f"unknown family {family!r}")
    return v.to(t.dtype)


def fill_state_dict(sd: dict, family: str = "auto") -> dict:
    return {k: fill_tensor(k, v, family) for k, v in sd.items()}
