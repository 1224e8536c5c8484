"""HyperStyle (Alaluf et al., CVPR 2022): a hypernetwork predicts per-sample offsets of the generator's conv weights.

One refinement pass: the hypernetwork reads the photo and the current reconstruction (6 channels, ``[-1, 1]``,
at its input size: 256 px for FFHQ), and returns, for every tuned generator layer, a relative offset ``delta``;
the offsets of successive passes add up (5 passes at inference). The starting code is a W (or W+) code from an
encoder and stays fixed; only the weights move. A tuned layer's modulated weight becomes

    weight = scale * W * (1 + delta) * style,  then demodulation as usual,

so the adjusted generator is an ordinary :class:`~inversion.stylegan2.Generator` whose tuned conv weights are
``W * (1 + delta)`` (:func:`adjusted_generator`), and edits run on it like on PTI's tuned copy.

Layout of the official ``SharedWeightsHyperNetResNet`` (keys under ``hypernet.`` in ``hyperstyle_ffhq.pt``):

- ``conv1`` 7x7 stride-2 conv (``input_nc`` -> 64, no bias), ``bn1``, ``relu`` (a PReLU), then ``body.{0..15}``:
  the 16 basic blocks of a ResNet-34 (``conv1``/``bn1``/``conv2``/``bn2``, ``downsample.{0,1}`` on the first block of
  stages 2-4); no max-pool, so a 256 px input gives 512 x 16 x 16 features;
- ``shared_weight_hypernet.{w1,b1,w2,b2}``: maps a 512-d code to a full (512, 512, 3, 3) offset; used by the
  layers in ``shared_layers`` (0,2,3,5,6,8,9,11,12) through ``refinement_blocks.{i}`` (``convs`` + ``linear``);
  the state dict stores its four tensors under each of those ten names;
- ``refinement_blocks.{i}`` for the other tuned layers: ``convs`` down to 2 x 2, then ``output`` (average pool +
  1x1 conv) giving one offset per (out, in) pair, shared by the k x k taps (to-RGB layers: ``convs`` down to 1 x 1 and
  a 1x1 ``output.0``);
- ``refinement_blocks.{i}`` is empty for layers not in ``layers_to_tune``.

Generator layer order (the hypernetwork's output index): ``conv1``, ``to_rgb1``, then per resolution
``convs[2k]``, ``convs[2k+1]``, ``to_rgbs[k]`` (26 layers at 1024 px). Facts from yuval-alaluf/hyperstyle (MIT);
the code is ours. Loading the official and the bundled files: :mod:`inversion.hyperstyle_io`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from inversion.encoders import build_ir_se_body
from inversion.stylegan2 import SQRT2, EqualLinear, Generator, blur, channels_at, upsample2x

__all__ = [
    "FFHQ_LAYERS_TO_TUNE", "FFHQ_SHARED_LAYERS", "N_ITERS", "HyperNetConfig", "HyperNet", "WEncoder",
    "adjusted_generator", "generator_layers", "layer_shapes", "refine", "synthesis_with_deltas",
]

FFHQ_LAYERS_TO_TUNE: tuple[int, ...] = (0, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 23, 24)
FFHQ_SHARED_LAYERS: tuple[int, ...] = (0, 2, 3, 5, 6, 8, 9, 11, 12)
N_ITERS = 5
"""Refinement passes at inference (the official ``n_iters_per_batch``)."""

Deltas = list[Optional[torch.Tensor]]


# --------------------------------------------------------------------------------------------------------------------
# Generator layers


def layer_shapes(size: int, *, channel_multiplier: float = 2, max_channels: int = 512) -> list[tuple[int, int, int]]:
    """``(kernel, in_channels, out_channels)`` of every modulated conv of a generator, in hypernetwork order."""
    ch = lambda r: channels_at(r, channel_multiplier=channel_multiplier, max_channels=max_channels)  # noqa: E731
    shapes = [(3, ch(4), ch(4)), (1, ch(4), 3)]
    for i in range(3, int(math.log2(size)) + 1):
        prev, cur = ch(2 ** (i - 1)), ch(2 ** i)
        shapes += [(3, prev, cur), (3, cur, cur), (1, cur, 3)]
    return shapes


def generator_layers(g: Generator) -> Iterator[tuple[str, nn.Module, int]]:
    """``(state-dict prefix, layer, W+ row)`` of every StyledConv / ToRGB in hypernetwork order."""
    yield "conv1", g.conv1, 0
    yield "to_rgb1", g.to_rgb1, 1
    for k, to_rgb in enumerate(g.to_rgbs):
        yield f"convs.{2 * k}", g.convs[2 * k], 2 * k + 1
        yield f"convs.{2 * k + 1}", g.convs[2 * k + 1], 2 * k + 2
        yield f"to_rgbs.{k}", to_rgb, 2 * k + 3


def _modconv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool,
             blur_kernel: Optional[torch.Tensor]) -> torch.Tensor:
    """Modulated conv with per-sample weights ``(N or 1, O, I, k, k)`` (already scaled); one grouped conv."""
    n, c_in, h, w_ = x.shape
    c_out, k = weight.shape[1], weight.shape[-1]
    w = weight * styles[:, None, :, None, None]
    if demodulate:
        w = w * torch.rsqrt(w.square().sum(dim=(2, 3, 4)) + 1e-8)[:, :, None, None, None]
    x = x.reshape(1, n * c_in, h, w_)
    if blur_kernel is not None:  # upsampling conv: transposed conv stride 2, then the 4x4 blur with padding 1
        y = F.conv_transpose2d(x, w.transpose(1, 2).reshape(n * c_in, c_out, k, k), stride=2, groups=n)
        return blur(y.reshape(n, c_out, *y.shape[-2:]), blur_kernel, pad=1)
    y = F.conv2d(x, w.reshape(n * c_out, c_in, k, k), padding=k // 2, groups=n)
    return y.reshape(n, c_out, h, w_)


def synthesis_with_deltas(g: Generator, ws: torch.Tensor, deltas: Deltas,
                          noise: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
    """W+ codes ``(N, n_latent, D)`` -> images, every tuned layer's weight scaled by ``1 + delta`` per sample.

    ``deltas[i]`` is None (layer untouched) or ``(N or 1, O, I, k, k)`` / ``(N or 1, O, I, 1, 1)`` (broadcast over
    the taps). ``noise``: the stored buffers when None (as HyperStyle's inference), else ``num_layers`` maps.
    Differentiable; works for any batch size (one grouped conv per layer).
    """
    n = ws.shape[0]
    layers = list(generator_layers(g))
    if len(deltas) != len(layers):
        raise ValueError(f"expected {len(layers)} weight deltas (None for untouched layers), got {len(deltas)}")
    noises = g.noises.as_list() if noise is None else list(noise)
    x = g.input.input.to(ws.dtype).expand(n, -1, -1, -1)
    skip, conv_i = None, 0
    for i, (name, layer, row) in enumerate(layers):
        conv = layer.conv
        weight = conv.weight * conv.scale
        if deltas[i] is not None:
            weight = conv.scale * (conv.weight * (1 + deltas[i].to(ws.dtype)))
        styles = conv.modulation(ws[:, row])
        if name.startswith("to_rgb"):
            out = _modconv(x, weight, styles, demodulate=False, blur_kernel=None) + layer.bias.view(1, -1, 1, 1)
            skip = out if skip is None else out + upsample2x(skip, layer.upsample.kernel)
        else:
            y = _modconv(x, weight, styles, demodulate=True, blur_kernel=conv.blur.kernel if conv.upsample else None)
            y = y + layer.noise.weight * noises[conv_i].to(y.dtype)
            x = F.leaky_relu(y + layer.activate.bias.view(1, -1, 1, 1), 0.2) * SQRT2
            conv_i += 1
    return skip


def adjusted_generator(g: Generator, deltas: Deltas) -> Generator:
    """A generator whose tuned conv weights are ``W * (1 + delta)`` (one sample: deltas with batch 1).

    Untouched tensors (mapping network, biases, to-RGB layers, noise, ...) are *shared* with ``g``, not copied: the
    extra memory is only the tuned weights. ``g`` itself is never modified. Eval mode, no gradients.
    """
    layers = list(generator_layers(g))
    if len(deltas) != len(layers):
        raise ValueError(f"expected {len(layers)} weight deltas (None for untouched layers), got {len(deltas)}")
    state = dict(g.state_dict())
    for (name, _, _), delta in zip(layers, deltas):
        if delta is None:
            continue
        if delta.shape[0] != 1:
            raise ValueError(f"adjusted_generator takes one sample's deltas, got a batch of {delta.shape[0]}")
        w = state[f"{name}.conv.weight"]
        state[f"{name}.conv.weight"] = (w * (1 + delta.to(device=w.device, dtype=w.dtype))).detach()
    with torch.device("meta"):
        adjusted = Generator(**g.config())
    adjusted.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in (*adjusted.parameters(), *adjusted.buffers())):
        raise RuntimeError("the adjusted generator kept uninitialised tensors")
    return adjusted.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------------------------
# Hypernetwork


@dataclass(frozen=True)
class HyperNetConfig:
    """Architecture of a hypernetwork (defaults: the official FFHQ 1024 one).

    ``layer_shapes``: ``(kernel, in, out)`` of the generator's modulated convs (:func:`layer_shapes`);
    ``shared_width``: in = out channels of the layers the shared hypernetwork serves; ``z_dim``: its code size
    (= the shared refinement blocks' output width); ``refine_width`` / ``refine_inner``: output / inner width of the
    per-layer blocks; ``shared_inner``: inner width of the shared layers' blocks; ``widths`` / ``units``: the
    ResNet body (ResNet-34: 64..512, 3/4/6/3); ``input_size``: image size the hypernetwork reads.
    """

    layer_shapes: tuple[tuple[int, int, int], ...] = tuple(layer_shapes(1024))
    layers_to_tune: tuple[int, ...] = FFHQ_LAYERS_TO_TUNE
    shared_layers: tuple[int, ...] = FFHQ_SHARED_LAYERS
    input_nc: int = 6
    input_size: int = 256
    widths: tuple[int, ...] = (64, 128, 256, 512)
    units: tuple[int, ...] = (3, 4, 6, 3)
    shared_width: int = 512
    z_dim: int = 512
    shared_inner: int = 128
    refine_width: int = 512
    refine_inner: int = 256

    def to_json(self) -> dict:
        return {k: [list(v) for v in val] if k == "layer_shapes" else (list(val) if isinstance(val, tuple) else val)
                for k, val in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> "HyperNetConfig":
        d = dict(d)
        d["layer_shapes"] = tuple(tuple(int(x) for x in s) for s in d["layer_shapes"])
        for k in ("layers_to_tune", "shared_layers", "widths", "units"):
            d[k] = tuple(int(x) for x in d[k])
        return cls(**d)


class BasicBlock(nn.Module):
    """ResNet basic block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, stride on ``conv1``."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                           if stride != 1 or c_in != c_out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class SharedWeightsHypernet(nn.Module):
    """Code ``(N, z)`` -> offset ``(N, C, C, 3, 3)``: ``((z @ w2 + b2).view(N, C, z) @ w1 + b1).view(N, C, C, 3, 3)``."""

    def __init__(self, width: int, z_dim: int, kernel: int = 3) -> None:
        super().__init__()
        self.width, self.z_dim, self.kernel = width, z_dim, kernel
        self.w1 = nn.Parameter(torch.zeros(z_dim, width * kernel * kernel))
        self.b1 = nn.Parameter(torch.zeros(width * kernel * kernel))
        self.w2 = nn.Parameter(torch.zeros(z_dim, width * z_dim))
        self.b2 = nn.Parameter(torch.zeros(width * z_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = (z @ self.w2 + self.b2).view(z.shape[0], self.width, self.z_dim)
        k = self.kernel
        return (h @ self.w1 + self.b1).view(z.shape[0], self.width, self.width, k, k)


def _stride2_convs(c_in: int, inner: int, c_out: int, n: int, *, first_stride: int = 2) -> nn.Sequential:
    """``n`` 3x3 convs (LeakyReLU 0.01 after each): c_in -> inner ... -> c_out, stride 2 except the first's."""
    layers: list[nn.Module] = []
    for j in range(n):
        layers += [nn.Conv2d(c_in if j == 0 else inner, c_out if j == n - 1 else inner, 3,
                             first_stride if j == 0 else 2, 1), nn.LeakyReLU(0.01)]
    return nn.Sequential(*layers)


class SharedRefinementBlock(nn.Module):
    """Features -> code (a stride-1 conv, then stride-2 convs down to 1 x 1, EqualLinear) -> shared hypernet."""

    def __init__(self, hypernet: SharedWeightsHypernet, c_in: int, inner: int, spatial: int) -> None:
        super().__init__()
        self.convs = _stride2_convs(c_in, inner, hypernet.z_dim, int(math.log2(spatial)) + 1, first_stride=1)
        self.linear = EqualLinear(hypernet.z_dim, hypernet.z_dim)
        self.hypernet = hypernet

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.hypernet(self.linear(self.convs(features).flatten(1)))


class RefinementBlock(nn.Module):
    """Features -> one offset per (out, in) pair (k x k convs; avg-pooled) or per weight (1x1 to-RGB convs)."""

    def __init__(self, shape: tuple[int, int, int], c_in: int, inner: int, width: int, spatial: int) -> None:
        super().__init__()
        self.kernel, self.c_in, self.c_out = shape
        n_convs = int(math.log2(spatial)) - (1 if self.kernel == 3 else 0)
        self.convs = _stride2_convs(c_in, inner, width, n_convs)
        project = nn.Conv2d(width, self.c_in * self.c_out, 1)
        self.output = nn.Sequential(project) if self.kernel == 1 else nn.Sequential(nn.AdaptiveAvgPool2d(1), project)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.output(self.convs(features))
        return x.view(-1, self.c_out, self.c_in, 1, 1)  # k x k layers: the same offset for every tap (broadcast)


class HyperNet(nn.Module):
    """``SharedWeightsHyperNetResNet``: ``(N, input_nc, S, S)`` -> one offset (or None) per generator layer."""

    def __init__(self, config: HyperNetConfig = HyperNetConfig()) -> None:
        super().__init__()
        cfg = self.config = config
        spatial = cfg.input_size // 16
        if spatial < 2 or 2 ** int(math.log2(spatial)) != spatial:
            raise ValueError(f"input_size must be 16 x a power of two >= 2, got {cfg.input_size}")
        if not set(cfg.layers_to_tune) <= set(range(len(cfg.layer_shapes))):
            raise ValueError(f"layers_to_tune {cfg.layers_to_tune} name layers the generator does not have "
                             f"({len(cfg.layer_shapes)} layers)")
        self.conv1 = nn.Conv2d(cfg.input_nc, cfg.widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(cfg.widths[0])
        self.relu = nn.PReLU(cfg.widths[0])
        blocks, prev = [], cfg.widths[0]
        for s, (width, count) in enumerate(zip(cfg.widths, cfg.units)):
            for j in range(count):
                blocks.append(BasicBlock(prev, width, 2 if j == 0 and s > 0 else 1))
                prev = width
        self.body = nn.Sequential(*blocks)
        self.shared_weight_hypernet = SharedWeightsHypernet(cfg.shared_width, cfg.z_dim)
        self.refinement_blocks = nn.ModuleList()
        for i, shape in enumerate(cfg.layer_shapes):
            if i not in cfg.layers_to_tune:
                block = None
            elif i in cfg.shared_layers:
                if shape != (3, cfg.shared_width, cfg.shared_width):
                    raise ValueError(f"layer {i} {shape} cannot use the shared {cfg.shared_width}-wide hypernetwork")
                block = SharedRefinementBlock(self.shared_weight_hypernet, prev, cfg.shared_inner, spatial)
            else:
                block = RefinementBlock(shape, prev, cfg.refine_inner, cfg.refine_width, spatial)
            self.refinement_blocks.append(block)

    def forward(self, x: torch.Tensor) -> Deltas:
        size, nc = self.config.input_size, self.config.input_nc
        if x.dim() != 4 or tuple(x.shape[1:]) != (nc, size, size):
            raise ValueError(f"expected (N, {nc}, {size}, {size}) inputs, got {tuple(x.shape)}")
        features = self.body(self.relu(self.bn1(self.conv1(x))))
        return [None if block is None else block(features) for block in self.refinement_blocks]


class WEncoder(nn.Module):
    """The W-space e4e of HyperStyle (``WEncoder(50, 'ir_se')``): IR-SE50 body, average pool, EqualLinear.

    ``forward(x)``: ``(N, 3, S, S)`` in [-1, 1] -> ``(N, style_dim)`` (before ``latent_avg``)."""

    def __init__(self, *, widths: Sequence[int] = (64, 128, 256, 512), units: Sequence[int] = (3, 4, 14, 3),
                 style_dim: int = 512) -> None:
        super().__init__()
        self.input_layer, self.body = build_ir_se_body(widths=widths, units=units)
        self.linear = EqualLinear(widths[-1], style_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.body(self.input_layer(x)).mean(dim=(2, 3)))


# --------------------------------------------------------------------------------------------------------------------
# Iterative refinement


def _pool(images: torch.Tensor, size: int) -> torch.Tensor:
    return images if images.shape[-1] == size else F.adaptive_avg_pool2d(images, (size, size))


def add_deltas(total: Optional[Deltas], new: Deltas) -> Deltas:
    """Accumulate one pass's offsets (None stays None)."""
    if total is None:
        return list(new)
    return [None if t is None else t + d for t, d in zip(total, new)]


def refine(hypernet: HyperNet, g: Generator, images: torch.Tensor, codes: torch.Tensor, *,
           n_iters: int = N_ITERS, on_pass: Optional[Callable[[int, Deltas, torch.Tensor], None]] = None,
           ) -> tuple[Deltas, torch.Tensor]:
    """HyperStyle's inference loop: ``n_iters`` passes from the fixed W+ ``codes`` ``(N, n_latent, D)``.

    ``images``: ``(N, 3, S, S)`` in [-1, 1] at the hypernetwork's input size. The first reconstruction is the plain
    ``g`` with the stored noise; each pass feeds ``[images, pooled reconstruction]``, adds the predicted offsets to
    the running sum and re-synthesises. Returns ``(summed deltas, last full-size image)``; ``on_pass(i, deltas,
    image)`` sees every pass (i = 1 .. n_iters).
    """
    size = hypernet.config.input_size
    y_hat = _pool(g.synthesis(codes), size)
    deltas: Optional[Deltas] = None
    image = None
    for i in range(1, n_iters + 1):
        deltas = add_deltas(deltas, hypernet(torch.cat([images, y_hat], dim=1)))
        image = synthesis_with_deltas(g, codes, deltas)
        if on_pass is not None:
            on_pass(i, deltas, image)
        y_hat = _pool(image, size)
    return deltas, image
