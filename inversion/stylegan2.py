"""The one StyleGAN2 generator of the project: pure PyTorch, rosinality state-dict layout.

The module tree (and therefore every ``state_dict`` key and shape) is that of rosinality's
``stylegan2-pytorch`` ``Generator`` (config-f), so the official FFHQ checkpoint and the
``decoder.*`` part of the pSp / e4e checkpoints load with ``strict=True``.

The forward computation is written differently from the reference, for speed on any batch size:
modulation scales the activations instead of building one weight per sample (no grouped conv),
demodulation scales the output channels, blur/upsampling FIRs are depthwise convolutions.
The two formulations are equal in exact arithmetic (measured: ~1e-13 apart in float64).

Shapes: ``w``/``z`` are ``(N, style_dim)``, W+ codes ``(N, n_latent, style_dim)``, images
``(N, 3, size, size)`` with real checkpoints in about ``[-1, 1]`` (never clamped here).
"""
from __future__ import annotations

import math
import re
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

NoiseSpec = Union[None, str, Sequence[torch.Tensor]]
SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------- pure ops


def fir_kernel(taps: Sequence[float], gain: float = 1.0) -> torch.Tensor:
    """2-D separable FIR kernel from 1-D taps, normalised to sum ``gain``."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[:, None] * k[None, :]
    return k / k.sum() * gain


def blur(x: torch.Tensor, kernel: torch.Tensor, pad: int, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Depthwise FIR filter (symmetric ``kernel`` (k, k)) with zero padding ``pad``; optional per-channel bias."""
    c = x.shape[1]
    weight = kernel.to(x.dtype).expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, None if bias is None else bias.to(x.dtype), padding=pad, groups=c)


def upsample2x(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Zero-insertion x2, pad (2, 1), FIR ``kernel`` (4x4, gain already included) -> (N, C, 2H, 2W).

    Written as one depthwise transposed convolution (stride 2, padding 1), which is the same map.
    """
    c = x.shape[1]
    weight = kernel.to(x.dtype).expand(c, 1, *kernel.shape)
    return F.conv_transpose2d(x, weight, stride=2, padding=1, groups=c)


def fold_blur(weight: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The 4x4 FIR ``kernel`` folded into transposed-conv weights ``(..., k, k)`` -> ``(..., k + 3, k + 3)``.

    ``blur(conv_transpose(x, w, stride=2), kernel, pad=1)`` equals ``conv_transpose(x, fold_blur(w, kernel),
    stride=2, padding=2)`` (blur and transposed conv are both linear and shift-equivariant; the folded
    kernel is the full 2-D convolution of ``w`` with the symmetric FIR).
    """
    lead, k = weight.shape[:-2], weight.shape[-1]
    f = kernel.shape[-1]
    w = weight.reshape(-1, 1, k, k)
    out = F.conv2d(w, kernel.to(w.dtype)[None, None], padding=f - 1)  # symmetric kernel: correlation = convolution
    return out.reshape(*lead, k + f - 1, k + f - 1)


def polyphase_weight(folded: torch.Tensor) -> torch.Tensor:
    """Folded 6x6 transposed-conv weights ``(..., O, I, 6, 6)`` -> ``(..., 4 O, I, 3, 3)``: the four output phases
    of the stride-2 transposed convolution as one stride-1 3x3 convolution (channel ``4 o + 2 a + b`` makes output
    pixel ``(2 i + a, 2 j + b)`` of channel ``o``; :func:`F.pixel_shuffle` (2) interleaves them).

    ``conv_transpose(x, wf, stride=2, padding=2)[2i + a] = sum_u x[i + u] wf[a + 4 - 2 (u + 1)]`` for u in -1..1, a
    3-tap correlation per phase; in 2-D the phase (a, b) kernel is ``wf[a + 4 - 2u', b + 4 - 2v']``.
    """
    # phase a reads taps (4, 2, 0) + a: the even / odd taps, reversed (slices only: nothing to copy to the device)
    w = torch.stack([folded[..., 0::2, :], folded[..., 1::2, :]], dim=-3).flip(-2)  # (..., O, I, a, u, 6)
    w = torch.stack([w[..., 0::2], w[..., 1::2]], dim=-2).flip(-1)  # (..., O, I, a, u, b, v)
    n = w.dim() - 6
    w = w.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3, n + 5)  # (..., O, a, b, I, u, v)
    return w.reshape(*w.shape[:n], 4 * w.shape[n], w.shape[n + 3], 3, 3)


def upsample_conv(x: torch.Tensor, folded: torch.Tensor, *, groups: int = 1,
                  bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``conv_transpose(x, folded, stride=2, padding=2)`` for folded 3x3-and-FIR weights ``(G*O, I, 6, 6)``
    (``groups`` = G samples stacked along channels) as one dense stride-1 3x3 convolution plus a pixel shuffle:
    tensor-core friendly, no depthwise pass. ``bias`` ``(G*O,)``."""
    phases = polyphase_weight(folded)
    b = None if bias is None else bias.repeat_interleave(4)
    return F.pixel_shuffle(F.conv2d(x, phases.to(x.dtype), None if b is None else b.to(x.dtype), padding=1,
                                    groups=groups), 2)


def bias_leaky_relu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``leaky_relu(x + bias, 0.2) * sqrt(2)`` with ``bias`` over dim 1."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return F.leaky_relu(x + bias.view(shape), 0.2) * SQRT2


def _inplace_ok(x: torch.Tensor) -> bool:
    """Whether ``x`` may be overwritten (no autograd graph needs it)."""
    return not (torch.is_grad_enabled() and x.requires_grad)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    demodulate: bool = True,
    upsample: bool = False,
    blur_kernel: Optional[torch.Tensor] = None,
    gain: float = 1.0,
    bias: Optional[torch.Tensor] = None,
    grouped: Optional[bool] = None,
    folded_blur: bool = False,
) -> torch.Tensor:
    """StyleGAN2 modulated convolution: ``gain * modconv(x) + bias``.

    x: (N, I, H, W); weight: (O, I, k, k), already scaled; styles: (N, I); bias: (O,) or None.
    Returns (N, O, H, W), or (N, O, 2H, 2W) with ``upsample`` (transposed conv stride 2, then
    the 4x4 ``blur_kernel`` with padding 1, as the reference does).

    Two exact formulations. ``grouped``: style, demodulation and gain folded into per-sample weights,
    one grouped convolution (no full-size elementwise passes; used for one sample, and for batches on
    CUDA, where an H200 measured it faster than the other form). Otherwise the activations are scaled
    before and after one shared-weight convolution (no per-sample weights; used for CPU batches).
    ``None`` picks as just described. ``folded_blur`` (upsampling, either form): the FIR folded into the
    transposed-conv weights and run as one dense stride-1 convolution over the four output phases plus a pixel
    shuffle (:func:`upsample_conv`), instead of a transposed convolution and a depthwise blur pass.
    """
    acc = torch.promote_types(weight.dtype, torch.float32)  # styles/demodulation in >= float32
    n = x.shape[0]
    if grouped is None:
        grouped = n == 1 or x.is_cuda
    if grouped:
        return _modconv_folded(x, weight, styles, demodulate=demodulate, upsample=upsample,
                               blur_kernel=blur_kernel, gain=gain, bias=bias, acc=acc, folded_blur=folded_blur)

    with torch.autocast(x.device.type, enabled=False):
        scale = torch.full((n, weight.shape[0]), gain, dtype=acc, device=x.device)
        if demodulate:
            w2 = weight.to(acc).square().sum(dim=(2, 3))  # (O, I)
            scale = scale * torch.rsqrt(styles.to(acc).square() @ w2.t() + 1e-8)  # (N, O)
    x = x * styles.to(x.dtype)[:, :, None, None]
    if upsample and folded_blur:
        y = upsample_conv(x, fold_blur(weight.to(acc), blur_kernel))
    elif upsample:
        y = F.conv_transpose2d(x, weight.transpose(0, 1).to(x.dtype), stride=2)
        y = blur(y, blur_kernel, pad=1)
    else:
        y = F.conv2d(x, weight.to(x.dtype), padding=weight.shape[-1] // 2)
    scale = scale.to(y.dtype)[:, :, None, None]
    if bias is None:
        return y * scale
    return torch.addcmul(bias.to(y.dtype).view(1, -1, 1, 1), y, scale)


def _modconv_folded(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool,
                    upsample: bool, blur_kernel: Optional[torch.Tensor], gain: float,
                    bias: Optional[torch.Tensor], acc: torch.dtype, folded_blur: bool = False) -> torch.Tensor:
    """Per-sample weights (style, demodulation and gain folded in), one grouped convolution for the batch."""
    n, c_in, h, w_ = x.shape
    c_out, k = weight.shape[0], weight.shape[-1]
    with torch.autocast(x.device.type, enabled=False):
        s = styles.to(acc)[:, None, :, None, None]
        w = weight.to(acc)[None] * s  # (N, O, I, k, k)
        scale = torch.full((), gain, dtype=acc, device=x.device)
        if demodulate:
            scale = gain * torch.rsqrt(w.square().sum(dim=(2, 3, 4)) + 1e-8)[:, :, None, None, None]
        if upsample and folded_blur:  # style and demodulation commute with the spatial fold
            w = fold_blur(weight.to(acc), blur_kernel)[None] * s * scale
        else:
            w = w * scale
    if n > 1:
        x = x.reshape(1, n * c_in, h, w_)  # NCHW: samples become groups
    if upsample and folded_blur:
        y = upsample_conv(x, w.reshape(n * c_out, c_in, *w.shape[-2:]), groups=n,
                          bias=None if bias is None else bias.repeat(n))
        return y.reshape(n, c_out, *y.shape[-2:])
    if upsample:
        y = F.conv_transpose2d(x, w.transpose(1, 2).reshape(n * c_in, c_out, k, k).to(x.dtype), stride=2, groups=n)
        return blur(y.reshape(n, c_out, *y.shape[-2:]), blur_kernel, pad=1, bias=bias)
    b = None if bias is None else bias.to(x.dtype).repeat(n)
    y = F.conv2d(x, w.reshape(n * c_out, c_in, k, k).to(x.dtype), b, padding=k // 2, groups=n)
    return y.reshape(n, c_out, *y.shape[-2:])


# ----------------------------------------------------------------------------- layers


class PixelNorm(nn.Module):
    """``x * rsqrt(mean(x^2, dim=1) + 1e-8)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate; optional fused bias + leaky ReLU."""

    def __init__(self, in_dim: int, out_dim: int, *, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate:
            return bias_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class ModulatedConv2d(nn.Module):
    """Weight (1, O, I, k, k) modulated per sample by a style from ``modulation``."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, *,
                 demodulate: bool = True, upsample: bool = False,
                 blur_taps: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        if upsample:
            self.blur = _KernelHolder(fir_kernel(blur_taps, gain=4.0))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size * kernel_size)
        self.demodulate = demodulate
        self.upsample = upsample

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, gain: float = 1.0,
                bias: Optional[torch.Tensor] = None, grouped: Optional[bool] = None,
                folded_blur: bool = False) -> torch.Tensor:
        styles = self.modulation(w)
        return modulated_conv2d(
            x, self.weight[0] * self.scale, styles, demodulate=self.demodulate,
            upsample=self.upsample, blur_kernel=self.blur.kernel if self.upsample else None,
            gain=gain, bias=bias, grouped=grouped, folded_blur=folded_blur,
        )


class _KernelHolder(nn.Module):
    """Holds a fixed FIR kernel buffer named ``kernel`` (the reference's ``Blur``/``Upsample``)."""

    def __init__(self, kernel: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("kernel", kernel)


class NoiseInjection(nn.Module):
    """Holds the learned noise strength ``weight`` (1,); :class:`StyledConv` applies it."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))


class FusedBiasActivation(nn.Module):
    """Holds the activation ``bias`` (C,); :class:`StyledConv` applies bias + leaky ReLU(0.2) * sqrt(2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))


class StyledConv(nn.Module):
    """Modulated 3x3 conv (optionally upsampling), noise injection, bias + activation."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, *, upsample: bool = False,
                 blur_taps: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample, blur_taps=blur_taps)
        self.noise = NoiseInjection()
        self.activate = FusedBiasActivation(out_ch)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor, *,
                grouped: Optional[bool] = None, folded_blur: bool = False) -> torch.Tensor:
        # lrelu(z) * sqrt2 == lrelu(sqrt2 * z): the gain is folded into the conv, bias and noise strength,
        # so conv + bias is one op and only the noise add and the activation touch the full tensor.
        y = self.conv(x, w, gain=SQRT2, bias=self.activate.bias * SQRT2, grouped=grouped, folded_blur=folded_blur)
        n = noise.to(y.dtype) * (self.noise.weight.to(y.dtype) * SQRT2)
        if _inplace_ok(y):
            return F.leaky_relu_(y.add_(n), 0.2)
        return F.leaky_relu(y + n, 0.2)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation) + bias, plus the upsampled previous skip."""

    def __init__(self, in_ch: int, style_dim: int, *, upsample: bool = True,
                 blur_taps: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        if upsample:
            self.upsample = _KernelHolder(fir_kernel(blur_taps, gain=4.0))
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: Optional[torch.Tensor] = None, *,
                grouped: Optional[bool] = None) -> torch.Tensor:
        out = self.conv(x, w, bias=self.bias.view(-1), grouped=grouped)
        if skip is not None:
            out = out + upsample2x(skip, self.upsample.kernel).to(out.dtype)
        return out


class ConstantInput(nn.Module):
    """Learned (1, C, 4, 4) input, repeated over the batch."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class NoiseBuffers(nn.Module):
    """Fixed per-layer noise maps ``noise_i`` of shape (1, 1, R, R)."""

    def __init__(self, resolutions: Sequence[int]) -> None:
        super().__init__()
        for i, r in enumerate(resolutions):
            self.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))
        self.count = len(resolutions)

    def as_list(self) -> list[torch.Tensor]:
        return [getattr(self, f"noise_{i}") for i in range(self.count)]


# ----------------------------------------------------------------------------- generator


def channels_at(resolution: int, *, channel_multiplier: float = 2, max_channels: int = 512) -> int:
    """Feature channels at a resolution: 512 up to 64 px, then 256, 128, 64, 32 (config-f)."""
    return min(max_channels, int(channel_multiplier * 16384) // resolution)


class Generator(nn.Module):
    """StyleGAN2 generator (mapping + synthesis) with rosinality's parameter layout.

    ``Generator(size, style_dim=512, n_mlp=8, channel_multiplier=2)`` is config-f; ``max_channels``
    narrows every layer for small models. ``n_latent = 2 log2(size) - 2`` style inputs,
    ``num_layers = 2 log2(size) - 3`` noise inputs.
    """

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: float = 2,
                 *, max_channels: int = 512, blur_taps: Sequence[float] = (1, 3, 3, 1),
                 lr_mlp: float = 0.01) -> None:
        super().__init__()
        log_size = int(math.log2(size))
        if size < 8 or 2 ** log_size != size:
            raise ValueError(f"size must be a power of two >= 8, got {size}")
        self.size = size
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.channel_multiplier = channel_multiplier
        self.max_channels = max_channels
        self.n_latent = 2 * log_size - 2
        self.num_layers = 2 * log_size - 3
        ch = {2 ** i: channels_at(2 ** i, channel_multiplier=channel_multiplier, max_channels=max_channels)
              for i in range(2, log_size + 1)}

        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activate=True) for _ in range(n_mlp)])
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], style_dim, blur_taps=blur_taps)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = ch[4]
        for i in range(3, log_size + 1):
            out_ch = ch[2 ** i]
            self.convs.append(StyledConv(in_ch, out_ch, style_dim, upsample=True, blur_taps=blur_taps))
            self.convs.append(StyledConv(out_ch, out_ch, style_dim, blur_taps=blur_taps))
            self.to_rgbs.append(ToRGB(out_ch, style_dim, blur_taps=blur_taps))
            in_ch = out_ch
        self.noises = NoiseBuffers([2 ** ((i + 5) // 2) for i in range(self.num_layers)])
        self.fold_blur: Optional[bool] = None
        """Default of ``synthesis(fold_blur=...)``: the upsampling FIR folded into the convolution weights and run
        as a stride-1 convolution over the four output phases (:func:`upsample_conv`). ``None`` = off here; the
        batched optimization turns it on per call (measured there). An earlier form of the fold (6x6 transposed
        convolutions) measured slower at batch 1 on an H200 (``bench/results/h200_speed_run2.json``)."""

    # -- config ---------------------------------------------------------------
    def config(self) -> dict:
        """Constructor arguments that rebuild this architecture."""
        return {"size": self.size, "style_dim": self.style_dim, "n_mlp": self.n_mlp,
                "channel_multiplier": self.channel_multiplier, "max_channels": self.max_channels}

    # -- mapping --------------------------------------------------------------
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, style_dim) -> w (N, style_dim): pixel norm + the MLP."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Mean of ``mapping(z)`` over ``n`` draws (seedable): (1, style_dim)."""
        ref = self.input.input
        device = generator.device if generator is not None else ref.device
        z = torch.randn(n, self.style_dim, generator=generator, device=device, dtype=ref.dtype)
        z = z.to(ref.device)
        return self.mapping(z).mean(dim=0, keepdim=True)

    # -- synthesis ------------------------------------------------------------
    def noise_list(self, noise: NoiseSpec, batch: int, *, like: torch.Tensor,
                   generator: Optional[torch.Generator] = None) -> list[torch.Tensor]:
        """Resolve a noise spec: None -> stored buffers, "random" -> fresh draws, or a given list."""
        if noise is None:
            return self.noises.as_list()
        if isinstance(noise, str):
            if noise != "random":
                raise ValueError(f"noise must be None, 'random' or a list of tensors, got {noise!r}")
            return [torch.randn(batch, 1, b.shape[-2], b.shape[-1], generator=generator,
                                device=like.device, dtype=like.dtype)
                    for b in self.noises.as_list()]
        noise = list(noise)
        if len(noise) != self.num_layers:
            raise ValueError(f"expected {self.num_layers} noise maps, got {len(noise)}")
        return noise

    def synthesis(self, ws: torch.Tensor, noise: NoiseSpec = None, *,
                  generator: Optional[torch.Generator] = None, mode: str = "auto",
                  size: Optional[int] = None, fold_blur: Optional[bool] = None) -> torch.Tensor:
        """W+ codes (N, n_latent, style_dim) -> images (N, 3, size, size).

        ``noise``: None uses the stored ``noises.noise_i`` buffers (deterministic); ``"random"``
        draws fresh maps from ``generator``; a list of ``num_layers`` tensors, each (1 or N, 1, R, R),
        is used as given (order: conv1, then convs[0], convs[1], ...).

        ``mode`` picks the (numerically equivalent) batch formulation: ``"folded"`` (per-sample weights,
        one grouped conv), ``"scaled"`` (activation scaling around shared-weight convs), ``"per_sample"``
        (one folded pass per sample) or ``"auto"``: folded on CUDA and for one sample, per-sample for
        CPU batches (measured on a 2-core CPU at 1024, bf16, batch 5: 2.3 s per-sample vs 9.8 s scaled
        vs 23 s folded).

        ``size`` (a power of two from 4 to ``self.size``; default the full size) stops at that resolution and
        returns the skip branch's RGB there (N, 3, size, size): only the layers up to ``size`` run (the
        coarse phase of a coarse-to-fine optimization). The W+ rows and noise maps of later layers are unused.

        ``fold_blur`` (default ``self.fold_blur``): run each upsampling convolution with its FIR folded in, as one
        stride-1 convolution over the four output phases (:func:`upsample_conv`; exact, about 2x faster for
        batched bf16 steps on an H200, ``bench/results/batch_variants_*``).
        """
        if ws.dim() != 3 or ws.shape[1] != self.n_latent or ws.shape[2] != self.style_dim:
            raise ValueError(f"ws must be (N, {self.n_latent}, {self.style_dim}), got {tuple(ws.shape)}")
        if mode not in ("auto", "folded", "scaled", "per_sample"):
            raise ValueError(f"unknown synthesis mode {mode!r}")
        size = self.size if size is None else int(size)
        if size < 4 or size > self.size or size & (size - 1):
            raise ValueError(f"size must be a power of two from 4 to {self.size}, got {size}")
        n = ws.shape[0]
        fold = bool(self.fold_blur if fold_blur is None else fold_blur)
        noises = self.noise_list(noise, n, like=ws, generator=generator)
        if n > 1 and (mode == "per_sample" or (mode == "auto" and not ws.is_cuda)):
            return torch.cat([
                self._synthesize(ws[i:i + 1], [m if m.shape[0] == 1 else m[i:i + 1] for m in noises], grouped=True,
                                 size=size, fold=fold)
                for i in range(n)])
        return self._synthesize(ws, noises, grouped={"folded": True, "scaled": False}.get(mode), size=size, fold=fold)

    def _synthesize(self, ws: torch.Tensor, noises: list[torch.Tensor], *, grouped: Optional[bool],
                    size: int, fold: bool) -> torch.Tensor:
        blocks = int(math.log2(size)) - 2  # to_rgbs run up to `size` (0 blocks: the 4 px output)
        x = self.input(ws.shape[0])
        if ws.shape[0] == 1 or grouped is False:  # NHWC: faster convs; batched groups want NCHW
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.conv1(x, ws[:, 0], noises[0], grouped=grouped)
        skip = self.to_rgb1(x, ws[:, 1], grouped=grouped)
        for k, to_rgb in enumerate(self.to_rgbs[:blocks]):
            x = self.convs[2 * k](x, ws[:, 2 * k + 1], noises[2 * k + 1], grouped=grouped, folded_blur=fold)
            x = self.convs[2 * k + 1](x, ws[:, 2 * k + 2], noises[2 * k + 2], grouped=grouped)
            skip = to_rgb(x, ws[:, 2 * k + 3], skip, grouped=grouped)
        return skip.contiguous()

    def forward(self, styles: Sequence[torch.Tensor], *, input_is_latent: bool = False,
                truncation: float = 1.0, truncation_latent: Optional[torch.Tensor] = None,
                inject_index: Optional[int] = None, noise: NoiseSpec = None,
                return_latents: bool = False,
                generator: Optional[torch.Generator] = None):
        """The reference's call semantics (list of z or w, truncation, style mixing).

        Differences by design: noise defaults to the stored buffers (deterministic) and style mixing
        needs an explicit ``inject_index`` (no hidden randomness). Returns ``(image, latents|None)``.
        """
        styles = list(styles)
        if not input_is_latent:
            styles = [self.mapping(s) for s in styles]
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]
        if len(styles) == 1:
            s = styles[0]
            latent = s.unsqueeze(1).expand(-1, self.n_latent, -1) if s.dim() == 2 else s
        else:
            if inject_index is None:
                raise ValueError("style mixing needs an explicit inject_index")
            a = styles[0].unsqueeze(1).expand(-1, inject_index, -1)
            b = styles[1].unsqueeze(1).expand(-1, self.n_latent - inject_index, -1)
            latent = torch.cat([a, b], dim=1)
        image = self.synthesis(latent, noise, generator=generator)
        return image, (latent if return_latents else None)


# ----------------------------------------------------------------------------- loading


def config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict:
    """Infer ``Generator`` constructor arguments from a rosinality-layout state dict."""
    try:
        style_dim = sd["style.1.weight"].shape[1]
        n_mlp = sum(1 for k in sd if re.fullmatch(r"style\.\d+\.weight", k))
        n_blocks = sum(1 for k in sd if re.fullmatch(r"to_rgbs\.\d+\.bias", k))
        size = 2 ** (n_blocks + 2)
        max_channels = sd["input.input"].shape[1]
        last = sd[f"to_rgbs.{n_blocks - 1}.conv.weight"].shape[2] if n_blocks else max_channels
    except KeyError as err:
        raise ValueError(f"not a StyleGAN2 generator state dict (missing {err})") from None
    channel_multiplier: float = last * size / 16384
    if channel_multiplier == int(channel_multiplier):
        channel_multiplier = int(channel_multiplier)
    return {"size": size, "style_dim": style_dim, "n_mlp": n_mlp,
            "channel_multiplier": channel_multiplier, "max_channels": max_channels}


def generator_from_state_dict(sd: dict[str, torch.Tensor]) -> Generator:
    """Build a generator of the right architecture and load ``sd`` strictly (float32, CPU)."""
    g = Generator(**config_from_state_dict(sd))
    g.load_state_dict(sd, strict=True)
    return g.eval().requires_grad_(False)


def load_generator(container: dict) -> tuple[Generator, Optional[torch.Tensor]]:
    """From an official container (``{"g_ema": sd, "latent_avg": (512,) or (1,512)}``) or a bare
    state dict, return ``(generator, latent_avg)`` with ``latent_avg`` shaped (1, style_dim) or None."""
    if "g_ema" in container:
        sd, latent_avg = container["g_ema"], container.get("latent_avg")
    elif "style.1.weight" in container:
        sd, latent_avg = container, None
    else:
        raise ValueError("checkpoint has no 'g_ema' generator state dict")
    g = generator_from_state_dict(sd)
    if latent_avg is not None:
        latent_avg = latent_avg.reshape(1, -1).float()
        if latent_avg.shape[1] != g.style_dim:
            raise ValueError(f"latent_avg has {latent_avg.shape[1]} values, expected {g.style_dim}")
    return g, latent_avg
