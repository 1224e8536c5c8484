"""LPIPS v0.1 perceptual distance (Zhang et al., CVPR 2018), our own implementation.

Images are float tensors ``(N, 3, H, W)`` in ``[-1, 1]``. The computation:

1. per-channel scaling ``(x - shift) / scale`` (ImageNet statistics re-expressed for [-1, 1]);
2. the torchvision ``features`` stack of VGG16 or AlexNet, tapped after five ReLUs;
3. each tap unit-normalised along channels: ``f / (sqrt(sum_c f^2) + 1e-10)``;
4. squared difference, a non-negative 1x1 "linear head" per tap (C -> 1), mean over H and W;
5. the distance is the sum of the five per-layer terms.

Backbone weights use torchvision's names (``features.{i}.weight/bias``) and are loaded with
:meth:`LPIPS.load_backbone` (the registry downloads them; nothing is fetched here). The v0.1 heads
ship with the project in ``inversion/data`` (BSD-2-Clause, see ``LICENSE-lpips.txt``).

Under autocast the convolutions may run in bf16/fp16; normalisation, heads and averaging always run
in at least float32.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LPIPS",
    "LPIPSWeightsError",
    "NETS",
    "backbone_keys",
    "build_lpips",
    "default_heads",
    "downsample_256",
    "head_keys",
    "lpips_on_256",
]

DATA_DIR = Path(__file__).resolve().parent / "data"
EPS = 1e-10
# Values from the package, created as float32 buffers (so float64 runs see the float32-rounded numbers).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)

# Layer descriptions, index = position in torchvision's ``features`` Sequential.
#   ("conv", in_ch, out_ch, kernel, stride, padding) | ("relu",) | ("pool", kernel, stride)
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
_ALEX_LAYERS = (
    ("conv", 3, 64, 11, 4, 2), ("relu",), ("pool", 3, 2),
    ("conv", 64, 192, 5, 1, 2), ("relu",), ("pool", 3, 2),
    ("conv", 192, 384, 3, 1, 1), ("relu",),
    ("conv", 384, 256, 3, 1, 1), ("relu",),
    ("conv", 256, 256, 3, 1, 1), ("relu",), ("pool", 3, 2),
)
TAPS = {"vgg": (3, 8, 15, 22, 29), "alex": (1, 4, 7, 9, 11)}
NETS = tuple(TAPS)


class LPIPSWeightsError(ValueError):
    """A backbone or head state dict does not have the expected keys or shapes."""


def _vgg16_layers() -> tuple[tuple, ...]:
    layers: list[tuple] = []
    in_ch = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(("pool", 2, 2))
        else:
            layers += [("conv", in_ch, v, 3, 1, 1), ("relu",)]
            in_ch = v
    return tuple(layers)


def _layers(net: str) -> tuple[tuple, ...]:
    if net not in TAPS:
        raise ValueError(f"unknown LPIPS net {net!r}; expected one of {NETS}")
    return _vgg16_layers() if net == "vgg" else _ALEX_LAYERS


def _tap_channels(net: str) -> tuple[int, ...]:
    layers = _layers(net)
    chans = []
    for tap in TAPS[net]:
        convs = [layer for layer in layers[:tap] if layer[0] == "conv"]
        chans.append(convs[-1][2])
    return tuple(chans)


def backbone_keys(net: str = "vgg") -> dict[str, tuple[int, ...]]:
    """The torchvision ``features.*`` keys (and shapes) LPIPS needs, up to the last tapped ReLU."""
    keys: dict[str, tuple[int, ...]] = {}
    for i, layer in enumerate(_layers(net)[: TAPS[net][-1] + 1]):
        if layer[0] == "conv":
            _, cin, cout, k, _, _ = layer
            keys[f"features.{i}.weight"] = (cout, cin, k, k)
            keys[f"features.{i}.bias"] = (cout,)
    return keys


def head_keys(net: str = "vgg") -> dict[str, tuple[int, ...]]:
    """The v0.1 head keys (``lin{k}.model.1.weight``) and shapes ``(1, C_k, 1, 1)``."""
    return {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(_tap_channels(net))}


def default_heads(net: str = "vgg") -> dict[str, torch.Tensor]:
    """The bundled official v0.1 heads for ``net`` (float32, BSD-2-Clause, from the ``lpips`` wheel)."""
    from safetensors.torch import load_file

    _layers(net)  # validates the name
    return load_file(str(DATA_DIR / f"lpips_v0.1_{net}.safetensors"))


def _check_keys(given: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], what: str) -> None:
    missing = sorted(set(expected) - set(given))
    extra = sorted(set(given) - set(expected))
    if missing or extra:
        raise LPIPSWeightsError(f"{what}: missing keys {missing[:6]}, unexpected keys {extra[:6]}")
    for key, shape in expected.items():
        if tuple(given[key].shape) != shape:
            raise LPIPSWeightsError(f"{what}: {key} has shape {tuple(given[key].shape)}, expected {shape}")


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors (from autocast) to float32; float32/float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _normalize(f: torch.Tensor) -> torch.Tensor:
    f = _upcast(f)
    return f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)) + EPS)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance with a VGG16 (``net="vgg"``) or AlexNet (``net="alex"``) trunk.

    The bundled v0.1 heads are loaded at construction (``heads=True``); the backbone must be loaded
    with :meth:`load_backbone` (or use :func:`build_lpips`). The module is frozen (no parameter
    requires grad) and has no train-mode behaviour; gradients flow to the inputs.

    ``spatial=True`` makes :meth:`forward` return a distance map ``(N, 1, H, W)`` (each layer's head
    output bilinearly resized to the input size, then summed) instead of ``(N,)``.
    """

    def __init__(self, net: str = "vgg", *, spatial: bool = False, heads: bool = True) -> None:
        super().__init__()
        _layers(net)  # validates the name
        self.net = net
        self.spatial = spatial
        self.taps = TAPS[net]
        modules: list[nn.Module] = []
        for layer in _layers(net)[: TAPS[net][-1] + 1]:
            if layer[0] == "conv":
                _, cin, cout, k, s, p = layer
                modules.append(nn.Conv2d(cin, cout, k, stride=s, padding=p))
            elif layer[0] == "relu":
                modules.append(nn.ReLU(inplace=True))
            else:
                modules.append(nn.MaxPool2d(layer[1], stride=layer[2]))
        self.features = nn.Sequential(*modules)
        self.lins = nn.ParameterList([nn.Parameter(torch.zeros(1, c, 1, 1)) for c in _tap_channels(net)])
        self.register_buffer("shift", torch.tensor(SHIFT, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE, dtype=torch.float32).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()
        self._backbone_loaded = False
        self.register_load_state_dict_post_hook(_mark_loaded)
        if heads:
            self.load_heads(default_heads(net))

    # ----------------------------------------------------------------------------- weights
    @torch.no_grad()
    def load_backbone(self, state_dict: Mapping[str, torch.Tensor]) -> LPIPS:
        """Load torchvision-format trunk weights (``features.{i}.weight/bias``).

        Keys outside ``features.`` (``classifier.*``, timm's ``pre_logits.*``/``head.*``) are ignored;
        ``features.*`` keys must match :func:`backbone_keys` exactly (keys past the last tap, such as
        a full VGG16's, are ignored too). Values are cast to this module's dtype.
        """
        expected = backbone_keys(self.net)
        n_layers = len(self.features)
        feats = {}
        for key, value in state_dict.items():
            if not key.startswith("features."):
                continue
            idx = key.split(".")[1]
            if idx.isdigit() and int(idx) >= n_layers:
                continue
            feats[key] = value
        _check_keys(feats, expected, f"LPIPS {self.net} backbone")
        self.features.load_state_dict({k[len("features."):]: v for k, v in feats.items()}, strict=True)
        self._backbone_loaded = True
        return self

    @torch.no_grad()
    def load_heads(self, state_dict: Mapping[str, torch.Tensor]) -> LPIPS:
        """Load v0.1 heads: exactly the keys ``lin0.model.1.weight`` .. ``lin4.model.1.weight``."""
        _check_keys(state_dict, head_keys(self.net), f"LPIPS {self.net} heads")
        for k, param in enumerate(self.lins):
            param.copy_(state_dict[f"lin{k}.model.1.weight"])
        return self

    @property
    def backbone_loaded(self) -> bool:
        """Whether backbone weights were loaded (via :meth:`load_backbone` or ``load_state_dict``)."""
        return self._backbone_loaded

    # ----------------------------------------------------------------------------- compute
    def _check_image(self, x: torch.Tensor, name: str) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{name} must be an image batch (N, 3, H, W), got {tuple(x.shape)}")

    def features_of(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five unit-normalised taps of ``x`` ``(N, 3, H, W)`` in [-1, 1] (float32 or wider)."""
        if not self._backbone_loaded:
            raise RuntimeError("LPIPS backbone weights are not loaded; call load_backbone(state_dict) first")
        self._check_image(x, "x")
        h = (x - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        taps = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                taps.append(_normalize(h))
        return taps

    @torch.no_grad()
    def target_features(self, y: torch.Tensor) -> list[torch.Tensor]:
        """Precompute a fixed target's normalised features (no gradient) for :meth:`distance_to_features`."""
        return [f.detach() for f in self.features_of(y)]

    def _terms(self, fx: Sequence[torch.Tensor], fy: Sequence[torch.Tensor], size: tuple[int, int]) -> list[torch.Tensor]:
        if len(fy) != len(fx):
            raise ValueError(f"expected {len(fx)} target feature maps, got {len(fy)}")
        terms = []
        for a, b, w in zip(fx, fy, self.lins):
            b = b.to(a.dtype)
            d = (a - b).square()
            head = (d * w.to(d.dtype)).sum(dim=1, keepdim=True)  # 1x1 conv C -> 1, no bias
            if self.spatial:
                terms.append(F.interpolate(head, size=size, mode="bilinear", align_corners=False))
            else:
                terms.append(head.mean(dim=(2, 3)).flatten())
        return terms

    def per_layer_to_features(self, x: torch.Tensor, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """The five per-layer terms against precomputed target features: ``(5, N)``
        (or ``(5, N, 1, H, W)`` when ``spatial``)."""
        return torch.stack(self._terms(self.features_of(x), feats, tuple(x.shape[-2:])))

    def distance_to_features(self, x: torch.Tensor, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """LPIPS between ``x`` and a target given by :meth:`target_features`: ``(N,)``
        (or ``(N, 1, H, W)`` when ``spatial``). The target may have batch 1 or N."""
        return self.per_layer_to_features(x, feats).sum(dim=0)

    def per_layer(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The five per-layer terms ``(5, N)`` (``(5, N, 1, H, W)`` when ``spatial``); they sum to the distance."""
        self._check_image(y, "y")
        if x.shape[-2:] != y.shape[-2:]:
            raise ValueError(f"x and y must have the same size, got {tuple(x.shape)} and {tuple(y.shape)}")
        n = x.shape[0]
        if y.shape[0] == n:
            both = self.features_of(torch.cat([x, y]))
            fx, fy = [f[:n] for f in both], [f[n:] for f in both]
        else:
            fx, fy = self.features_of(x), self.features_of(y)
        return torch.stack(self._terms(fx, fy, tuple(x.shape[-2:])))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS distance between ``x`` and ``y`` (both ``(N, 3, H, W)`` in [-1, 1]; ``y`` may have batch 1).

        Returns ``(N,)``, or a map ``(N, 1, H, W)`` when ``spatial``.
        """
        return self.per_layer(x, y).sum(dim=0)


def _mark_loaded(module: nn.Module, incompatible: object) -> None:
    missing = getattr(incompatible, "missing_keys", [])
    if not any(k.startswith("features.") for k in missing):
        module._backbone_loaded = True


def build_lpips(net: str = "vgg", *, backbone_state_dict: Mapping[str, torch.Tensor] | None = None,
                spatial: bool = False) -> LPIPS:
    """An :class:`LPIPS` with the bundled v0.1 heads and, when given, the backbone weights."""
    model = LPIPS(net, spatial=spatial)
    if backbone_state_dict is not None:
        model.load_backbone(backbone_state_dict)
    return model


def downsample_256(x: torch.Tensor, *, size: int = 256) -> torch.Tensor:
    """Area-downsample ``(N, C, H, W)`` so the longer side is ``size``; smaller images are returned as is."""
    h, w = x.shape[-2:]
    if max(h, w) <= size:
        return x
    f = size / max(h, w)
    return F.interpolate(x, size=(max(1, round(h * f)), max(1, round(w * f))), mode="area")


def lpips_on_256(lpips: LPIPS, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS after area-downsampling both images to 256 px when larger (Image2StyleGAN / PTI practice)."""
    return lpips(downsample_256(x), downsample_256(y))
