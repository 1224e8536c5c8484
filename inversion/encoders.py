"""pSp and e4e image encoders (IR-SE50 body + feature pyramid + per-style heads).

Images are ``(N, 3, H, W)`` float tensors in ``[-1, 1]`` (H = W = 256 for the FFHQ models); codes are
``(N, n_styles, style_dim)`` in W+ (18 x 512 for FFHQ 1024), returned *before* ``latent_avg`` is added.

The module layout reproduces the state_dict keys of the official ``psp_ffhq_encode.pt`` /
``e4e_ffhq_encode.pt`` checkpoints (``encoder.`` prefix stripped), so they load with ``strict=True``:

- ``input_layer.{0,1,2}``: 3x3 conv (no bias), BatchNorm, PReLU;
- ``body.{i}``: IR-SE bottleneck units, ``res_layer.{0..5}`` (BN, conv3x3, PReLU, conv3x3 with the unit's stride, BN,
  squeeze-excitation ``fc1``/``fc2``) and ``shortcut_layer.{0,1}`` (1x1 conv + BN) only where the width changes;
- ``styles.{i}``: ``convs.{0,2,4,..}`` stride-2 3x3 convs (LeakyReLU 0.01 between) down to 1x1, then ``linear``
  (an equalized-lr linear layer);
- ``latlayer1`` / ``latlayer2``: 1x1 lateral convs of the feature pyramid.

Facts (layout, constants) follow eladrich/pixel2style2pixel and omertov/encoder4editing; the code is ours.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn


from inversion.checkpoints import CheckpointError, check_state_dict
from inversion.stylegan2 import EqualLinear, Generator, generator_from_state_dict  # one EqualLinear for all models

__all__ = [
    "BottleneckIRSE",
    "E4EEncoder",
    "FFHQ_WIDTHS",
    "INFERENCE_STAGE",
    "IR50_UNITS",
    "EncoderBundle",
    "EncoderCheckpointError",
    "EqualLinear",
    "GradualStyleBlock",
    "PSPEncoder",
    "SEModule",
    "build_ir_se_body",
    "face_pool",
    "bundled_encoder_files",
    "load_bundled_encoder",
    "load_encoder_checkpoint",
    "n_styles_for_size",
    "preprocess",
    "stage_ends",
]

FFHQ_WIDTHS: tuple[int, int, int, int] = (64, 128, 256, 512)
IR50_UNITS: tuple[int, int, int, int] = (3, 4, 14, 3)
"""Units per stage of the 50-layer IR-SE body."""
INFERENCE_STAGE = 18
"""e4e's ``ProgressiveStage.Inference``: every per-style offset is used."""


class EncoderCheckpointError(CheckpointError):
    """A pSp/e4e checkpoint does not have the expected structure."""


def n_styles_for_size(size: int) -> int:
    """Number of W+ rows of a StyleGAN2 generator of output ``size`` (18 for 1024, 12 for 128)."""
    return 2 * int(math.log2(size)) - 2


# --------------------------------------------------------------------------------------------------------------------
# IR-SE body (shared with the identity backbone)


class SEModule(nn.Module):
    """Squeeze-excitation: ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))`` with bias-free 1x1 convs."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)  # narrow test/small variants keep at least one unit
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class BottleneckIRSE(nn.Module):
    """IR-SE unit: ``res_layer(x) + shortcut(x)``; the stride sits on the second 3x3 conv.

    Shortcut: strided subsampling when the width is unchanged (the reference's parameter-free 1x1 max-pool),
    else ``shortcut_layer`` = 1x1 strided conv + BatchNorm. No activation after the sum.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        if in_channels != out_channels:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut_layer = None
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            SEModule(out_channels, 16),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut_layer is None:
            shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        else:
            shortcut = self.shortcut_layer(x)
        return self.res_layer(x) + shortcut


def build_ir_se_body(
    *,
    in_channels: int = 3,
    widths: Sequence[int] = FFHQ_WIDTHS,
    units: Sequence[int] = IR50_UNITS,
) -> tuple[nn.Sequential, nn.Sequential]:
    """Return ``(input_layer, body)`` of an IR-SE network (defaults: IR-SE50, 64/128/256/512 wide).

    The first unit of every stage has stride 2, so the stage outputs are 1/2, 1/4, 1/8, 1/16 of the input size.
    """
    if len(widths) != len(units):
        raise ValueError(f"widths {tuple(widths)} and units {tuple(units)} must have the same length")
    input_layer = nn.Sequential(
        nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.PReLU(widths[0]),
    )
    blocks: list[nn.Module] = []
    previous = widths[0]
    for width, count in zip(widths, units):
        for j in range(count):
            blocks.append(BottleneckIRSE(previous, width, 2 if j == 0 else 1))
            previous = width
    return input_layer, nn.Sequential(*blocks)


def stage_ends(units: Sequence[int]) -> list[int]:
    """Indices of the last unit of every stage (6, 20, 23 for IR-SE50 — the c1/c2/c3 taps use the last three)."""
    ends, total = [], 0
    for count in units:
        total += count
        ends.append(total - 1)
    return ends


# --------------------------------------------------------------------------------------------------------------------
# Heads


class GradualStyleBlock(nn.Module):
    """Map a ``(N, in_c, s, s)`` feature map to one ``(N, out_c)`` style: log2(s) stride-2 convs, then EqualLinear.

    ``hidden_channels`` (default ``out_channels``, as in pSp/e4e) is the convs' width, for narrow small models."""

    def __init__(self, in_channels: int, out_channels: int, spatial: int, *,
                 hidden_channels: int | None = None) -> None:
        super().__init__()
        n_convs = int(round(math.log2(spatial)))
        if 2**n_convs != spatial or n_convs < 1:
            raise ValueError(f"style block input size must be a power of two >= 2, got {spatial}")
        hidden = out_channels if hidden_channels is None else hidden_channels
        layers: list[nn.Module] = []
        for k in range(n_convs):
            layers += [nn.Conv2d(in_channels if k == 0 else hidden, hidden, 3, 2, 1), nn.LeakyReLU(0.01)]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(hidden, out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).flatten(1))


# --------------------------------------------------------------------------------------------------------------------
# Encoders


class _StyleEncoderBase(nn.Module):
    """IR-SE body, FPN lateral layers and ``n_styles`` GradualStyleBlocks (shared by pSp and e4e)."""

    def __init__(
        self,
        *,
        n_styles: int = 18,
        input_size: int = 256,
        in_channels: int = 3,
        widths: Sequence[int] = FFHQ_WIDTHS,
        units: Sequence[int] = IR50_UNITS,
        style_dim: int = 512,
        coarse_ind: int = 3,
        middle_ind: int = 7,
        head_channels: int | None = None,
    ) -> None:
        super().__init__()
        if len(widths) != 4 or len(units) != 4:
            raise ValueError("the encoders need a 4-stage body (widths and units of length 4)")
        if input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {input_size}")
        self._config = {
            "n_styles": n_styles, "input_size": input_size, "in_channels": in_channels, "widths": list(widths),
            "units": list(units), "style_dim": style_dim, "coarse_ind": coarse_ind, "middle_ind": middle_ind,
        }
        if head_channels is not None:
            self._config["head_channels"] = head_channels
        self.n_styles = n_styles
        self.input_size = input_size
        self.in_channels = in_channels
        self.style_dim = style_dim
        self.coarse_ind = coarse_ind
        self.middle_ind = middle_ind
        self.input_layer, self.body = build_ir_se_body(in_channels=in_channels, widths=widths, units=units)
        self._taps = stage_ends(units)[1:]  # c1, c2, c3
        top = widths[3]
        self.styles = nn.ModuleList()
        for i in range(n_styles):
            spatial = input_size // (16 if i < coarse_ind else 8 if i < middle_ind else 4)
            self.styles.append(GradualStyleBlock(top, style_dim, spatial, hidden_channels=head_channels))
        self.latlayer1 = nn.Conv2d(widths[2], top, 1)
        self.latlayer2 = nn.Conv2d(widths[1], top, 1)

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this architecture (JSON-serialisable)."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._config.items()}

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Body features ``(c1, c2, c3)`` at 1/4, 1/8, 1/16 of the input size."""
        size, ch = self.input_size, self.in_channels
        if x.dim() != 4 or tuple(x.shape[1:]) != (ch, size, size):
            raise ValueError(f"expected images (N, {ch}, {size}, {size}) in [-1, 1], got {tuple(x.shape)}")
        h = self.input_layer(x)
        c1, c2, t1, t2 = None, None, self._taps[0], self._taps[1]
        for i, unit in enumerate(self.body):
            h = unit(h)
            if i == t1:
                c1 = h
            elif i == t2:
                c2 = h
        return c1, c2, h

    @staticmethod
    def _upsample_add(top: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
        return F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class PSPEncoder(_StyleEncoderBase):
    """pSp ``GradualStyleEncoder(50, 'ir_se')``; defaults = FFHQ (256 px input, 18 x 512 codes).

    ``forward(x)``: ``(N, 3, 256, 256)`` in [-1, 1] -> codes ``(N, n_styles, style_dim)`` before ``latent_avg``.
    Styles ``[0, coarse_ind)`` read c3, ``[coarse_ind, middle_ind)`` the pyramid level p2, the rest p1.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3 = self.features(x)
        n = self.n_styles
        codes = [self.styles[i](c3) for i in range(min(self.coarse_ind, n))]
        if n > self.coarse_ind:
            p2 = self._upsample_add(c3, self.latlayer1(c2))
            codes += [self.styles[i](p2) for i in range(self.coarse_ind, min(self.middle_ind, n))]
            if n > self.middle_ind:
                p1 = self._upsample_add(p2, self.latlayer2(c1))
                codes += [self.styles[i](p1) for i in range(self.middle_ind, n)]
        return torch.stack(codes, dim=1)


class E4EEncoder(_StyleEncoderBase):
    """e4e ``Encoder4Editing(50, 'ir_se')``: one base code ``w0`` plus per-row offsets.

    ``forward(x)`` returns ``(N, n_styles, style_dim)`` before ``latent_avg``: every row starts as
    ``w0 = styles[0](c3)``; for ``i = 1 .. min(progressive_stage, n_styles - 1)`` the offset ``styles[i](features)``
    is added to row ``i`` (features c3, then p2 from ``coarse_ind``, p1 from ``middle_ind``).
    ``progressive_stage`` is not part of the checkpoint; it defaults to 18 (inference: all offsets).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stage = INFERENCE_STAGE

    @property
    def progressive_stage(self) -> int:
        """How many offsets are added (0 = ``w0`` everywhere; ``>= n_styles - 1`` = all; 18 = inference)."""
        return self._stage

    @progressive_stage.setter
    def progressive_stage(self, stage: int) -> None:
        self.set_progressive_stage(stage)

    def set_progressive_stage(self, stage: int) -> None:
        """Set the progressive-training stage (an int in ``0 .. max(18, n_styles)``)."""
        stage = int(stage)
        if not 0 <= stage <= max(INFERENCE_STAGE, self.n_styles):
            raise ValueError(f"progressive_stage must be in 0..{max(INFERENCE_STAGE, self.n_styles)}, got {stage}")
        self._stage = stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3 = self.features(x)
        w0 = self.styles[0](c3)
        last = min(self._stage, self.n_styles - 1)
        if last == 0:
            return w0.unsqueeze(1).expand(-1, self.n_styles, -1).clone()
        features, p2 = c3, None
        rows = [w0]
        for i in range(1, last + 1):
            if i == self.coarse_ind:
                p2 = features = self._upsample_add(c3, self.latlayer1(c2))
            elif i == self.middle_ind:
                features = self._upsample_add(p2, self.latlayer2(c1))
            rows.append(w0 + self.styles[i](features))
        rows += [w0] * (self.n_styles - 1 - last)
        return torch.stack(rows, dim=1)


# --------------------------------------------------------------------------------------------------------------------
# Input pipeline


def preprocess(aligned: Image.Image, *, size: int = 256) -> torch.Tensor:
    """Aligned face (PIL, any mode/size) -> ``(1, 3, size, size)`` float32 in [-1, 1] for the encoders.

    Resizes with Pillow's bilinear filter (with its antialiasing when shrinking, as the reference's
    ``Resize((256, 256))`` on a PIL image does), then ``[0, 1] -> (x - 0.5) / 0.5``.
    """
    img = aligned.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(size, size, 3)
    x = data.permute(2, 0, 1).unsqueeze(0).to(torch.float32) / 255.0
    return (x - 0.5) / 0.5


def face_pool(images: torch.Tensor, *, size: int = 256) -> torch.Tensor:
    """Area-pool generator output ``(N, 3, H, W)`` to ``size`` (AdaptiveAvgPool2d; exact 4x4 mean for 1024 -> 256)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.adaptive_avg_pool2d(images, (size, size))


# --------------------------------------------------------------------------------------------------------------------
# Official checkpoints

_ENCODER_TYPES = {"psp": "GradualStyleEncoder", "e4e": "Encoder4Editing"}


@dataclass(frozen=True)
class EncoderBundle:
    """A loaded pSp/e4e checkpoint.

    ``encoder``: the encoder module (eval mode, float32); ``decoder_state_dict``: the generator weights with the
    ``decoder.`` prefix stripped (rosinality layout, for ``inversion.stylegan2``); ``latent_avg``:
    ``(n_styles, 512)`` (a stored ``(512,)`` or ``(1, 512)`` is broadcast; zeros when the model was trained without
    ``start_from_latent_avg``); ``opts``: the checkpoint's options with defaults filled in.
    """

    kind: str
    encoder: nn.Module
    decoder_state_dict: dict[str, torch.Tensor]
    latent_avg: torch.Tensor
    opts: dict[str, Any] = field(default_factory=dict)

    @property
    def output_size(self) -> int:
        return int(self.opts["output_size"])

    def codes_to_wplus(self, codes: torch.Tensor) -> torch.Tensor:
        """Encoder codes ``(N, n_styles, 512)`` -> W+ ``(N, n_styles, 512)`` (adds ``latent_avg``)."""
        return codes + self.latent_avg.to(device=codes.device, dtype=codes.dtype)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 3, 256, 256)`` in [-1, 1] -> W+ ``(N, n_styles, 512)``."""
        return self.codes_to_wplus(self.encoder(images))

    def build_generator(self) -> Generator:
        """The project's ``Generator`` with the decoder weights (strict), eval mode, no gradients, float32 CPU."""
        try:
            gen = generator_from_state_dict(self.decoder_state_dict)
        except (ValueError, RuntimeError) as err:
            raise EncoderCheckpointError(f"the {self.kind} decoder weights do not fit the StyleGAN2 layout: {err}") from None
        if gen.size != self.output_size or gen.n_latent != self.latent_avg.shape[0]:
            raise EncoderCheckpointError(
                f"the {self.kind} decoder is {gen.size} px ({gen.n_latent} styles) but opts say {self.output_size} px"
            )
        return gen


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _latent_avg(stored: Any, n_styles: int, used: bool) -> torch.Tensor:
    """``(n_styles, 512)`` float32: the stored average, broadcast from ``(512,)`` / ``(1, 512)``; zeros if unused."""
    if not used:
        return torch.zeros(n_styles, 512)
    if stored is None:
        raise EncoderCheckpointError("opts say start_from_latent_avg but the checkpoint has no 'latent_avg'")
    latent_avg = torch.as_tensor(stored).detach().float()
    if tuple(latent_avg.shape) not in ((512,), (1, 512), (n_styles, 512)):
        raise EncoderCheckpointError(
            f"latent_avg must be (512,), (1, 512) or ({n_styles}, 512), got {tuple(latent_avg.shape)}"
        )
    return latent_avg.reshape(-1, 512).expand(n_styles, 512).clone()


def load_encoder_checkpoint(ckpt: dict[str, Any], kind: Literal["psp", "e4e"]) -> EncoderBundle:
    """Turn an official ``psp_ffhq_encode.pt`` / ``e4e_ffhq_encode.pt`` dict into an :class:`EncoderBundle`.

    Expects ``state_dict`` (``encoder.*`` + ``decoder.*``), ``opts`` and, when trained with
    ``start_from_latent_avg``, ``latent_avg``. Unknown top-level keys (optimizer, discriminator, ...) are ignored.
    Raises :class:`EncoderCheckpointError` with a plain message when anything does not fit.
    """
    if kind not in _ENCODER_TYPES:
        raise ValueError(f"kind must be 'psp' or 'e4e', got {kind!r}")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        got = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise EncoderCheckpointError(f"expected a {kind} checkpoint dict with a 'state_dict' entry, got {got}")
    opts = dict(ckpt.get("opts") or {})
    opts.setdefault("encoder_type", _ENCODER_TYPES[kind])
    opts.setdefault("output_size", 1024)
    opts.setdefault("learn_in_w", False)
    opts.setdefault("input_nc", 3)
    opts.setdefault("start_from_latent_avg", "latent_avg" in ckpt)
    if opts["encoder_type"] != _ENCODER_TYPES[kind]:
        raise EncoderCheckpointError(
            f"this is not a {kind} checkpoint: opts['encoder_type'] is {opts['encoder_type']!r}, "
            f"expected {_ENCODER_TYPES[kind]!r}"
        )
    if opts["learn_in_w"]:
        raise EncoderCheckpointError("checkpoints trained with learn_in_w=True (single W code) are not supported")
    if kind == "e4e":
        opts.setdefault("stylegan_size", opts["output_size"])
        opts["output_size"] = int(opts["stylegan_size"])
        in_channels = 3
    else:
        in_channels = int(opts["input_nc"])
    n_styles = n_styles_for_size(int(opts["output_size"]))
    latent_avg = _latent_avg(ckpt.get("latent_avg"), n_styles, bool(opts["start_from_latent_avg"]))

    state = ckpt["state_dict"]
    enc_state, dec_state = _strip(state, "encoder."), _strip(state, "decoder.")
    if not enc_state or not dec_state:
        raise EncoderCheckpointError("state_dict must hold both 'encoder.*' and 'decoder.*' weights")
    cls = PSPEncoder if kind == "psp" else E4EEncoder
    with torch.device("meta"):  # no throw-away random init: the checkpoint's tensors are used as they are
        encoder = cls(n_styles=n_styles, in_channels=in_channels)
    expected = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    try:
        check_state_dict(enc_state, expected, f"the {kind} encoder weights ('encoder.*')")
    except CheckpointError as err:
        raise EncoderCheckpointError(str(err)) from None
    enc_state = {k: v.float() if v.is_floating_point() else v for k, v in enc_state.items()}
    encoder.load_state_dict(enc_state, strict=True, assign=True)
    encoder.eval().requires_grad_(False)

    return EncoderBundle(kind=kind, encoder=encoder, decoder_state_dict=dec_state, latent_avg=latent_avg, opts=opts)


# --------------------------------------------------------------------------------------------------------------------
# Our own small encoders (config.json + model.safetensors)


def bundled_encoder_files(bundle: EncoderBundle) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, config)`` to store an encoder we trained: ``encoder.*`` weights + ``latent_avg``, and
    ``{"kind", "output_size", "encoder": <constructor kwargs>}``. Inverse of :func:`load_bundled_encoder`."""
    tensors = {f"encoder.{k}": v.detach().contiguous() for k, v in bundle.encoder.state_dict().items()}
    tensors["latent_avg"] = bundle.latent_avg.detach().float().contiguous()
    config = {"kind": bundle.kind, "output_size": bundle.output_size, "encoder": bundle.encoder.config()}
    return tensors, config


def load_bundled_encoder(tensors: dict[str, torch.Tensor], config: dict[str, Any], *, kind: str) -> EncoderBundle:
    """Build a bundle from :func:`bundled_encoder_files` output (e.g. read from safetensors + JSON), strictly."""
    if config.get("kind", kind) != kind or kind not in _ENCODER_TYPES:
        raise EncoderCheckpointError(f"expected a {kind} encoder, the config says {config.get('kind')!r}")
    try:
        kwargs = dict(config["encoder"])
        cls = PSPEncoder if kind == "psp" else E4EEncoder
        with torch.device("meta"):
            encoder = cls(**kwargs)
    except (KeyError, TypeError, ValueError) as err:
        raise EncoderCheckpointError(f"the {kind} encoder config is not usable: {err}") from None
    state = _strip(tensors, "encoder.")
    expected = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    try:
        check_state_dict(state, expected, f"the {kind} encoder weights")
    except CheckpointError as err:
        raise EncoderCheckpointError(str(err)) from None
    encoder.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                            strict=True, assign=True)
    latent_avg = tensors.get("latent_avg")
    n, dim = encoder.n_styles, encoder.style_dim
    if latent_avg is None or tuple(latent_avg.shape) not in ((dim,), (1, dim), (n, dim)):
        got = None if latent_avg is None else tuple(latent_avg.shape)
        raise EncoderCheckpointError(f"latent_avg must be ({dim},), (1, {dim}) or ({n}, {dim}), got {got}")
    latent_avg = latent_avg.float().reshape(-1, dim).expand(n, dim).clone()
    opts = {"output_size": int(config.get("output_size", 2 ** ((n + 2) // 2))), "input_size": encoder.input_size}
    return EncoderBundle(kind=kind, encoder=encoder.eval().requires_grad_(False), decoder_state_dict={},
                         latent_avg=latent_avg, opts=opts)
