"""Procedural cartoon faces with known attributes, aligned like FFHQ (pure PyTorch, any device).

Every image is drawn from two vectors: the labelled attributes (:data:`ATTRIBUTES`, what a regressor
learns) and unlabelled nuisance values (:data:`NUISANCE`: background, face shape, colours, jitter),
all in fixed ranges. Drawing is a pure function of those vectors, vectorised over the batch: shapes are
analytic signed distances turned into coverage with a one-pixel linear ramp (anti-aliased, no
supersampling), shading is Lambert on an ellipsoid. Coordinates are in "128-px units" whatever the
output size: eyes at (48, 60) and (80, 60), mouth at (64, 94) — FFHQ's aligned 1024 px layout
(eyes y~480, x~385/640; mouth y~750) scaled to 128.

Randomness comes only from a ``numpy.random.Generator`` (or an int seed) in the samplers, so a seed
fixes a batch exactly (on one device; CPU and GPU may differ by float rounding).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch

Seed = Union[int, np.random.Generator, None]


@dataclass(frozen=True)
class Attribute:
    """A labelled attribute: ``name``, value range ``[low, high]``, ``binary`` = only low/high occur."""

    name: str
    low: float
    high: float
    binary: bool = False
    doc: str = ""


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("yaw", -1.0, 1.0, doc="head turn; + = nose towards image right (features shift right, right eye narrows)"),
    Attribute("smile", -1.0, 1.0, doc="mouth curvature; -1 frown, +1 open smile with teeth"),
    Attribute("age", 0.0, 1.0, doc="wrinkles (forehead, crow's feet, eye bags, folds) from 0.2, gray hair from 0.5"),
    Attribute("hair_color", 0.0, 1.0, doc="black -> dark brown -> brown -> auburn -> blond"),
    Attribute("hair_length", 0.0, 1.0, doc="0 short (above the ears), 1 down to the shoulders"),
    Attribute("skin_tone", 0.0, 1.0, doc="light -> dark"),
    Attribute("glasses", 0.0, 1.0, binary=True, doc="frames around both eyes"),
    Attribute("eye_open", 0.0, 1.0, doc="eye opening; 0 closed"),
    Attribute("light", -1.0, 1.0, doc="light direction; -1 from image left, +1 from image right"),
)
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(a.name for a in ATTRIBUTES)
GLASSES_PROBABILITY = 0.3

NUISANCE: tuple[str, ...] = (
    "bg_r1", "bg_g1", "bg_b1", "bg_r2", "bg_g2", "bg_b2", "bg_angle",
    "face_width", "face_length", "iris", "lips", "shirt_r", "shirt_g", "shirt_b",
    "brow", "jitter_x", "jitter_y", "hairline", "volume", "frame",
)
"""Unlabelled per-image values, each uniform in [0, 1]."""

_HAIR = torch.tensor([[0.07, 0.06, 0.06], [0.22, 0.13, 0.08], [0.42, 0.27, 0.15],
                      [0.62, 0.33, 0.14], [0.90, 0.78, 0.48]])
_SKIN = torch.tensor([[0.99, 0.86, 0.76], [0.90, 0.70, 0.56], [0.70, 0.49, 0.34], [0.40, 0.26, 0.18]])
_IRIS = torch.tensor([[0.30, 0.18, 0.08], [0.20, 0.40, 0.65], [0.25, 0.45, 0.25], [0.12, 0.08, 0.05]])
_FRAME = torch.tensor([[0.04, 0.04, 0.05], [0.30, 0.17, 0.08], [0.55, 0.57, 0.60], [0.60, 0.08, 0.10]])
_GRAY = torch.tensor([0.80, 0.80, 0.78])
_SCLERA = torch.tensor([0.96, 0.95, 0.92])
_TEETH = torch.tensor([0.97, 0.95, 0.90])
_MOUTH = torch.tensor([0.32, 0.08, 0.09])
_EYE_Y, _EYE_DX, _MOUTH_Y = 60.0, 16.0, 94.0


# ----------------------------------------------------------------------------- sampling


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def sample_attributes(n: int, seed: Seed = None) -> np.ndarray:
    """(n, len(ATTRIBUTES)) float32: continuous ones uniform over their range, ``glasses`` Bernoulli(0.3)."""
    rng = _rng(seed)
    out = np.empty((n, len(ATTRIBUTES)), dtype=np.float32)
    for j, a in enumerate(ATTRIBUTES):
        if a.binary:
            out[:, j] = np.where(rng.random(n) < GLASSES_PROBABILITY, a.high, a.low)
        else:
            out[:, j] = rng.uniform(a.low, a.high, n)
    return out


def sample_nuisance(n: int, seed: Seed = None) -> np.ndarray:
    """(n, len(NUISANCE)) float32, uniform in [0, 1]."""
    return _rng(seed).random((n, len(NUISANCE)), dtype=np.float32)


# ----------------------------------------------------------------------------- drawing helpers


def _ramp(d: torch.Tensor, e: float) -> torch.Tensor:
    """Coverage of a shape from its signed distance ``d`` (negative inside), ``e`` = one pixel."""
    return (d * (-1.0 / e)).add_(0.5).clamp_(0.0, 1.0)


def _ellipse_sd(dx: torch.Tensor, dy: torch.Tensor, a, b) -> torch.Tensor:
    """Approximate signed distance to an axis-aligned ellipse (first-order, exact on the boundary).

    ``dx`` is usually (n, 1, 1, W) and ``dy`` (n, 1, H, 1): the per-axis terms stay small and only a few
    operations run at full size."""
    u, v = dx / a, dy / b
    f = (u * u - 1.0) + v * v
    g = (u * (2.0 / a)) ** 2 + (v * (2.0 / b)) ** 2
    return f.div_(g.sqrt_().add_(1e-4))


def _interp(palette: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear colour ramp: ``t`` (n,) in [0, 1] -> (n, 3, 1, 1)."""
    palette = palette.to(t.device)
    x = t.clamp(0, 1) * (len(palette) - 1)
    i = x.floor().long().clamp(max=len(palette) - 2)
    f = (x - i)[:, None]
    return (palette[i] * (1 - f) + palette[i + 1] * f)[:, :, None, None]


def _pick(palette: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Nearest palette entry for ``t`` (n,) in [0, 1] -> (n, 3, 1, 1)."""
    i = (t * len(palette)).long().clamp(0, len(palette) - 1)
    return palette.to(t.device)[i][:, :, None, None]


def _paint(canvas: torch.Tensor, colour: torch.Tensor, mask: torch.Tensor) -> None:
    """Alpha-composite ``colour`` over ``canvas`` (in place) with coverage ``mask`` (n, 1, h, w)."""
    canvas.add_((colour - canvas).mul_(mask))


class _Box:
    """A window of the image covering [x0, x1) x [y0, y1) in 128-px units: pixel grids and views."""

    def __init__(self, size: int, x0: float, x1: float, y0: float, y1: float, device: torch.device) -> None:
        s = 128.0 / size
        self.r0, self.r1 = max(0, int(y0 / s)), min(size, int(math.ceil(y1 / s)))
        self.c0, self.c1 = max(0, int(x0 / s)), min(size, int(math.ceil(x1 / s)))
        c = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * s
        self.X = c[self.c0:self.c1].view(1, 1, 1, -1)
        self.Y = c[self.r0:self.r1].view(1, 1, -1, 1)

    def view(self, t: torch.Tensor) -> torch.Tensor:
        return t[:, :, self.r0:self.r1, self.c0:self.c1]


# ----------------------------------------------------------------------------- rendering


def render_faces_torch(attrs: torch.Tensor, nuisance: torch.Tensor, *, size: int = 128) -> torch.Tensor:
    """Draw faces. attrs (n, len(ATTRIBUTES)), nuisance (n, len(NUISANCE)) on any device ->
    float32 (n, 3, size, size) in [0, 1] on that device."""
    if attrs.dim() != 2 or attrs.shape[1] != len(ATTRIBUTES):
        raise ValueError(f"attrs must be (n, {len(ATTRIBUTES)}), got {tuple(attrs.shape)}")
    if nuisance.shape != (attrs.shape[0], len(NUISANCE)):
        raise ValueError(f"nuisance must be ({attrs.shape[0]}, {len(NUISANCE)}), got {tuple(nuisance.shape)}")
    attrs, nuisance = attrs.float(), nuisance.float()
    dev, e = attrs.device, 128.0 / size

    def col(t: torch.Tensor) -> torch.Tensor:  # (n,) -> (n, 1, 1, 1)
        return t.view(-1, 1, 1, 1)

    A = {a.name: col(attrs[:, j]) for j, a in enumerate(ATTRIBUTES)}
    N = {k: nuisance[:, j] for j, k in enumerate(NUISANCE)}
    Nc = {k: col(v) for k, v in N.items()}
    yaw, smile, age, light = A["yaw"], A["smile"], A["age"], A["light"]
    box = _Box(size, 0, 128, 0, 128, dev)
    X, Y = box.X, box.Y

    # geometry
    jx, jy = (Nc["jitter_x"] - 0.5) * 3.0, (Nc["jitter_y"] - 0.5) * 3.0
    fcx, fcy = 64.0 - 5.0 * yaw + jx, 66.0 + jy
    fa = 33.0 * (0.9 + 0.2 * Nc["face_width"])
    fb = 45.0 * (0.94 + 0.12 * Nc["face_length"])
    vol = Nc["volume"]
    th = light * 1.1
    lx, ly, lz = torch.sin(th) * 0.95, -0.3, torch.cos(th) * 0.95

    skin = _interp(_SKIN, attrs[:, ATTRIBUTE_NAMES.index("skin_tone")])
    gray = ((age - 0.5) / 0.5).clamp(0, 1) * 0.9
    hair = _interp(_HAIR, attrs[:, ATTRIBUTE_NAMES.index("hair_color")])
    hair = hair + (_GRAY.to(dev).view(1, 3, 1, 1) - hair) * gray

    # background: two-colour linear gradient
    ang = col(N["bg_angle"] * 2 * math.pi)
    c1 = torch.stack([N["bg_r1"], N["bg_g1"], N["bg_b1"]], 1)[:, :, None, None] * 0.8 + 0.12
    c2 = torch.stack([N["bg_r2"], N["bg_g2"], N["bg_b2"]], 1)[:, :, None, None] * 0.8 + 0.12
    t = ((X - 64) * (torch.cos(ang) / 110) + (Y - 64) * (torch.sin(ang) / 110)).add_(0.5).clamp_(0, 1)
    canvas = c1 + (c2 - c1) * t

    # neck and shoulders
    box = _Box(size, 40, 88, 72, 128, dev)
    ncx, nw = fcx + 2.0 * yaw, 11.0 * (0.9 + 0.2 * Nc["face_width"])
    neck = _ramp(torch.maximum((box.X - ncx).abs() - nw, fcy + 10 - box.Y), e)
    _paint(box.view(canvas), skin * (0.62 + 0.18 * ((box.Y - fcy - fb) / 12).clamp(0, 1)), neck)
    box = _Box(size, 0, 128, 112, 128, dev)
    sh = _ramp(_ellipse_sd(box.X - (64 + jx - 2 * yaw), box.Y - 152, 60 + 10 * Nc["face_width"], 38), e)
    _paint(box.view(canvas), shirt_colour(N) * (1.05 - 0.3 * ((128 - box.Y) / 14).clamp(0, 1)), sh)

    # hair behind the head (long hair reaches the shoulders)
    ln = A["hair_length"]
    hl = (0.55 + 0.6 * (-(X - fcx) / (fa + 8) * lx + lz * 0.6).clamp(min=0))
    strands = 0.07 * min(1.0, max(0.0, (size - 48) / 48))  # fade the strand texture where it would alias
    hl = hl * (1.0 + strands * torch.sin((X - fcx) * 1.7 + 3.0 * torch.sin(Y * 0.11)))
    hair_rgb = hair * hl  # (n, 3, S, S)
    back = _ellipse_sd(X - fcx, Y - (fcy - 6 + 28 * ln), fa + 5 + 6 * vol + 3 * ln, fb * 0.95 + 34 * ln)
    _paint(canvas, hair_rgb * 0.8, _ramp(torch.maximum(back, Y - (fcy - 4 + 60 * ln)), e))

    # ears, then the face (albedo with features, shaded as an ellipsoid)
    box = _Box(size, 12, 116, 50, 76, dev)
    for s in (-1.0, 1.0):
        ear = _ramp(_ellipse_sd(box.X - (fcx + s * (fa - 1.5) - 5 * yaw), box.Y - (fcy - 4), 4.5, 8.5), e)
        _paint(box.view(canvas), skin * (0.8 + 0.15 * s * light), ear)
    box = _Box(size, 20, 108, 15, 117, dev)
    bX, bY = box.X, box.Y
    dyn = ((bY - fcy) / fb).clamp(min=0)
    fa_y = fa * (1.0 - 0.24 * dyn * dyn)
    face = _ramp(_ellipse_sd(bX - fcx, bY - fcy, fa_y, fb), e)
    nx, ny = (bX - fcx) / fa_y, (bY - fcy) / fb
    nz = (1.0 - nx * nx - ny * ny).clamp_(min=0).sqrt_()
    shade = (nx * lx + ny * ly + nz * lz).clamp_(min=0).mul_(0.58).add_(0.5)
    albedo = skin.expand(-1, -1, size, size).clone()
    _draw_features(albedo, A, Nc, skin, hair, size=size, fcx=fcx, fa=fa, jx=jx, jy=jy)
    _paint(box.view(canvas), box.view(albedo) * shade, face)

    # glasses (temples go under the side hair), then the hair in front
    _draw_glasses(canvas, A, Nc, size=size, fcx=fcx, fa=fa, jx=jx, jy=jy)
    box = _Box(size, 10, 118, 0, 100, dev)
    hx = (box.X - fcx) / fa
    hairline = fcy - 31 + 7 * Nc["hairline"] + 30 * hx ** 4 + 4 * (Nc["hairline"] - 0.5) * hx
    cap = _ellipse_sd(box.X - fcx, box.Y - (fcy - 4), fa + 2.5 + 3 * vol, fb + 3 + 3 * vol)
    front = _ramp(torch.maximum(cap, box.Y - hairline), e)
    _paint(box.view(canvas), box.view(hair_rgb), front)
    return canvas.clamp_(0.0, 1.0)


def shirt_colour(N: dict) -> torch.Tensor:
    """(n, 3, 1, 1) clothing colour from the nuisance values."""
    return torch.stack([N["shirt_r"], N["shirt_g"], N["shirt_b"]], 1)[:, :, None, None] * 0.85 + 0.05


def _eye_geometry(yaw: torch.Tensor, jx: torch.Tensor, s: float):
    """Eye centre x and width scale for side ``s`` (-1 image left, +1 image right)."""
    ex = 64.0 + s * _EYE_DX * (1 - 0.12 * yaw.abs()) + 3.5 * yaw + jx
    ws = 1.0 - 0.28 * (s * yaw).clamp(min=0) + 0.08 * (-s * yaw).clamp(min=0)
    return ex, ws


def _draw_features(albedo: torch.Tensor, A: dict, Nc: dict, skin: torch.Tensor, hair: torch.Tensor, *,
                   size: int, fcx, fa, jx, jy) -> None:
    """Brows, eyes, nose, mouth and age lines, painted in place on the face albedo (n, 3, S, S)."""
    dev, e = albedo.device, 128.0 / size
    yaw, smile, light, eo = A["yaw"], A["smile"], A["light"], A["eye_open"]
    wr = (A["age"] - 0.2).clamp(min=0) / 0.8  # wrinkle strength
    ey = _EYE_Y + jy

    # forehead lines
    band = _Box(size, 42, 86, 30, 52, dev)
    X, Y, view = band.X, band.Y, band.view(albedo)
    for j in range(3):
        dxn = (X - fcx) / 13.0
        d = torch.maximum((Y - (ey - 27 + 4.0 * j + 1.5 * dxn * dxn)).abs() - 0.35, (dxn.abs() - 1) * 13)
        view.mul_(1 - 0.35 * wr * _ramp(d, e))

    # eye band: brows, eyes, crow's feet, eye bags
    band = _Box(size, 30, 98, 42, 74, dev)
    X, Y, view = band.X, band.Y, band.view(albedo)
    brow_col = hair * 0.75
    for s in (-1.0, 1.0):
        ex, ws = _eye_geometry(yaw, jx, s)
        rx, ry = 6.5 * ws, 3.6 * eo + 0.35
        dxn = (X - ex) / rx
        inside_x = (dxn.abs() - 1.0) * rx
        # brow
        bdx = (X - ex - s * 0.8) / (8.0 * ws)
        by = ey - 8.5 - 1.2 * eo - 2.0 * (1 - bdx * bdx)
        d = torch.maximum((Y - by).abs() - (0.7 + 0.6 * Nc["brow"]) * (1 - 0.4 * bdx * bdx), (bdx.abs() - 1) * 8)
        _paint(view, brow_col, _ramp(d, e))
        # sclera, iris, pupil
        sclera = _ramp(_ellipse_sd(X - ex, Y - ey, rx, ry), e)
        _paint(view, _SCLERA.to(dev).view(1, 3, 1, 1), sclera)
        ix = ex + 1.2 * yaw
        iris = _ramp(_ellipse_sd(X - ix, Y - ey, 2.7 * ws, 2.7), e) * sclera
        _paint(view, _pick(_IRIS, Nc["iris"].view(-1)), iris)
        pupil = _ramp(_ellipse_sd(X - ix, Y - ey, 1.2 * ws, 1.2), e) * sclera
        _paint(view, torch.zeros(1, 3, 1, 1, device=dev), pupil)
        # upper lid / lash line (a curved line when closed)
        arc = (1 - dxn * dxn).clamp(min=0).sqrt()
        top = ey - ry * arc + 1.3 * (1 - eo) * arc
        d = torch.maximum((Y - top).abs() - 0.55, inside_x - 0.5)
        view.mul_(1 - 0.85 * _ramp(d, e))
        # age: crow's feet and bags
        cx = ex + s * (rx + 2.8)
        for m in (-0.45, 0.0, 0.45):
            d = torch.maximum((Y - ey - m * s * (X - cx)).abs() - 0.3, (X - cx).abs() - 1.8)
            view.mul_(1 - 0.4 * wr * _ramp(d, e))
        d = torch.maximum((Y - (ey + ry + 2.6 - 1.4 * dxn * dxn)).abs() - 0.35, inside_x + 1.0)
        view.mul_(1 - 0.3 * wr * _ramp(d, e))

    # nose and mouth band
    band = _Box(size, 38, 90, 62, 106, dev)
    X, Y, view = band.X, band.Y, band.view(albedo)
    nx = 64.0 + 7.0 * yaw + jx
    ridge = torch.exp(-(((X - nx + 2.8 * light) / 1.6) ** 2 + ((Y - ey - 13) / 8.0) ** 2))
    view.mul_(1 - (0.08 + 0.1 * light.abs()) * ridge)
    for s in (-1.0, 1.0):
        nostril = _ramp(_ellipse_sd(X - (nx + s * 2.6), Y - (ey + 20.5), 1.5, 0.9), e)
        view.mul_(1 - 0.55 * nostril)
    mx, my = 64.0 + 4.5 * yaw + jx, _MOUTH_Y + jy
    w = 10.0 * (1 + 0.12 * smile) * (1 - 0.1 * yaw.abs())
    for s in (-1.0, 1.0):  # nasolabial folds: age and smiling
        f = ((Y - (ey + 19)) / (my + 2 - ey - 19)).clamp(0, 1)
        fx = nx + s * (6.0 + f * (w + 2.5 - 6.0)) + (mx - nx) * f
        d = torch.maximum((X - fx).abs() - 0.35, (Y - (ey + 19 + (my + 2 - ey - 19) / 2)).abs() - (my + 2 - ey - 19) / 2)
        view.mul_(1 - (0.3 * wr + 0.25 * smile.clamp(min=0)) * _ramp(d, e))
    dxn = (X - mx) / w
    yc = my + smile * 3.2 * (0.45 - dxn * dxn)
    o = smile.clamp(min=0) * 3.8 * (1 - dxn * dxn).clamp(min=0)
    edge_x = (dxn.abs() - 1) * w
    lip_t = (1 - dxn * dxn).clamp(min=0).sqrt()
    lips = torch.maximum(edge_x, torch.maximum((yc - o / 2 - 1.2 * lip_t) - Y, Y - (yc + o / 2 + 1.9 * lip_t)))
    lip_col = skin * torch.tensor([0.86, 0.55, 0.55], device=dev).view(1, 3, 1, 1) * (0.85 + 0.25 * Nc["lips"])
    _paint(view, lip_col, _ramp(lips, e))
    inner = _ramp(torch.maximum(edge_x + 0.5, (Y - yc).abs() - o / 2), e)
    _paint(view, _MOUTH.to(dev).view(1, 3, 1, 1), inner)
    teeth = inner * _ramp(Y - (yc - o / 2 + 0.55 * o), e) * (o - 1.0).clamp(0, 1)
    _paint(view, _TEETH.to(dev).view(1, 3, 1, 1), teeth)


def _draw_glasses(canvas: torch.Tensor, A: dict, Nc: dict, *, size: int, fcx, fa, jx, jy) -> None:
    """Frames, bridge and temples, painted in place where ``glasses`` is 1 (coverage times the value)."""
    dev, e = canvas.device, 128.0 / size
    g = A["glasses"]
    band = _Box(size, 18, 110, 48, 72, dev)
    X, Y, view = band.X, band.Y, band.view(canvas)
    gy = _EYE_Y + jy - 0.5
    frame = _pick(_FRAME, Nc["frame"].view(-1))
    t = 0.55 + 0.35 * Nc["frame"]
    inner = []
    for s in (-1.0, 1.0):
        ex, ws = _eye_geometry(A["yaw"], jx, s)
        rx = 10.0 * ws
        sd = _ellipse_sd(X - ex, Y - gy, rx, 7.5)
        view.mul_(1 - 0.12 * g * _ramp(sd, e))  # lens tint
        _paint(view, frame, g * _ramp(sd.abs() - t, e))
        temple_end = fcx + s * fa
        d = torch.maximum((Y - (gy - 2.5)).abs() - t, ((X - (ex + s * rx + temple_end) / 2).abs()
                                                       - (temple_end - ex - s * rx).abs() / 2))
        _paint(view, frame, g * _ramp(d, e) * (s * (temple_end - ex - s * rx) > 0))
        inner.append(ex + s * rx)
    mid, half = (inner[0] + inner[1]) / 2, (inner[1] - inner[0]).abs() / 2 + 0.5
    d = torch.maximum((Y - (gy - 2.0 - 1.0 * (1 - ((X - mid) / half) ** 2))).abs() - t, (X - mid).abs() - half)
    _paint(view, frame, g * _ramp(d, e))


# ----------------------------------------------------------------------------- public helpers


def render_faces(attrs: np.ndarray, *, size: int = 128, seed: Seed = 0, nuisance: Optional[np.ndarray] = None,
                 chunk: int = 16) -> np.ndarray:
    """Draw faces on the CPU: attrs (n, len(ATTRIBUTES)) -> uint8 (n, size, size, 3).

    Nuisance values come from ``nuisance`` (n, len(NUISANCE)) or are drawn from ``seed``; the same
    ``seed`` gives the same backgrounds/face shapes, so varying one attribute changes only its region.
    """
    attrs = np.asarray(attrs, dtype=np.float32)
    if nuisance is None:
        nuisance = sample_nuisance(len(attrs), seed)
    out = np.empty((len(attrs), size, size, 3), dtype=np.uint8)
    with torch.no_grad():
        for i in range(0, len(attrs), chunk):
            img = render_faces_torch(torch.from_numpy(attrs[i:i + chunk]),
                                     torch.from_numpy(np.asarray(nuisance[i:i + chunk], dtype=np.float32)), size=size)
            out[i:i + chunk] = (img * 255 + 0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def face_batch(n: int, seed: Seed, size: int = 128, *,
               device: Optional[torch.device] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random faces: (images (n, 3, size, size) float32 in [-1, 1], attrs (n, len(ATTRIBUTES)))
    on ``device`` (default CPU). Deterministic for an int ``seed`` or a seeded numpy Generator."""
    rng = _rng(seed)
    attrs = torch.from_numpy(sample_attributes(n, rng))
    nuis = torch.from_numpy(sample_nuisance(n, rng))
    if device is not None:
        attrs, nuis = attrs.to(device), nuis.to(device)
    with torch.no_grad():
        img = render_faces_torch(attrs, nuis, size=size)
    return img * 2 - 1, attrs


def save_grid(images: np.ndarray, path, *, cols: int = 8) -> None:
    """Write uint8 images (n, H, W, 3) as one PNG grid (for looking at samples)."""
    from PIL import Image

    n, h, w, _ = images.shape
    rows = -(-n // cols)
    grid = np.full((rows * h, cols * w, 3), 255, dtype=np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = images[k]
    Image.fromarray(grid).save(path)
