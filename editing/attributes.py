"""Face-attribute regressor (small CNN) and a Fréchet distance on its features.

The bundled model (``inversion/data/attributes_128.safetensors`` + ``attributes_128.json``) was trained on
the procedural faces of ``training/faces.py`` (``python -m training.train_attributes``). It measures what an
edit did (smile, yaw, age, ...) and, through its penultimate features, how far a set of generated images is
from another set (an FID-like number, only meaningful for images like the built-in 128 px faces).

Images are ``(N, 3, H, W)`` float in [-1, 1]; any size is resized to the model's input size. Predictions
are in each attribute's own range (probabilities for binary attributes).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inversion.checkpoints import CheckpointError

DATA_DIR = Path(__file__).resolve().parents[1] / "inversion" / "data"
DEFAULT_NAME = "attributes_128"


@dataclass(frozen=True)
class AttributeInfo:
    """Name and range of one predicted attribute; ``binary`` ones are predicted as probabilities."""

    name: str
    low: float
    high: float
    binary: bool = False


class AttributeNet(nn.Module):
    """Conv-ReLU stack (stride 2, plus a stride-1 conv at 16 and 8 px) -> 4x4 map -> ``feat_dim`` features -> one output per
    attribute (continuous ones scaled to [-1, 1], binary ones as logits)."""

    def __init__(self, attributes: Sequence[AttributeInfo], *, input_size: int = 128,
                 widths: Sequence[int] = (16, 32, 64, 96, 64), feat_dim: int = 128) -> None:
        super().__init__()
        self.attributes = tuple(attributes)
        self.input_size = input_size
        self.widths = tuple(widths)
        self.feat_dim = feat_dim
        layers: list[nn.Module] = []
        c_in, res = 3, input_size
        for k, c in enumerate(widths):
            layers += _conv(c_in, c, stride=2)
            res //= 2
            if 1 < k < len(widths) - 1:
                layers += _conv(c, c, stride=1)
            c_in = c
        if res != 4:
            raise ValueError(f"input_size / 2**len(widths) must be 4, got {res}")
        self.body = nn.Sequential(*layers)
        self.feat = nn.Sequential(nn.Flatten(), nn.Linear(c_in * 16, feat_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(feat_dim, len(self.attributes))

    def config(self) -> dict:
        """Constructor arguments (JSON-ready)."""
        return {"attributes": [a.__dict__ for a in self.attributes], "input_size": self.input_size,
                "widths": list(self.widths), "feat_dim": self.feat_dim}

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Check (N, 3, H, W) and resize to the input size (area-like antialiased bilinear)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
        p = next(self.parameters())
        images = images.to(device=p.device, dtype=p.dtype)
        if images.shape[-2:] != (self.input_size, self.input_size):
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False, antialias=images.shape[-1] > self.input_size)
        return images

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, feat_dim)."""
        return self.feat(self.body(self.prepare(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Raw outputs (N, n_attributes): scaled values in [-1, 1] (continuous) or logits (binary)."""
        return self.head(self.features(images))


def _conv(c_in: int, c_out: int, *, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.LeakyReLU(0.1, inplace=True)]


# ----------------------------------------------------------------------------- targets <-> values


def encode_targets(model: AttributeNet, values: torch.Tensor) -> torch.Tensor:
    """Attribute values (N, A) in their own ranges -> training targets (continuous in [-1, 1], binary 0/1)."""
    out = values.clone().float()
    for j, a in enumerate(model.attributes):
        out[:, j] = (values[:, j] - a.low) / (a.high - a.low) * (1 if a.binary else 2) - (0 if a.binary else 1)
    return out


def decode_outputs(model: AttributeNet, raw: torch.Tensor) -> torch.Tensor:
    """Raw outputs (N, A) -> values in each attribute's range (binary: probability of ``high``)."""
    out = raw.clone().float()
    for j, a in enumerate(model.attributes):
        if a.binary:
            out[:, j] = torch.sigmoid(raw[:, j])
        else:
            out[:, j] = (raw[:, j].clamp(-1, 1) + 1) / 2 * (a.high - a.low) + a.low
    return out


@torch.no_grad()
def predict_attributes(model: AttributeNet, images: torch.Tensor, *,
                       batch_size: int = 128) -> dict[str, torch.Tensor]:
    """Predict every attribute: images (N, 3, H, W) in [-1, 1] -> {name: (N,) tensor in its range}."""
    model.eval()
    raw = torch.cat([model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    values = decode_outputs(model, raw)
    return {a.name: values[:, j] for j, a in enumerate(model.attributes)}


# ----------------------------------------------------------------------------- Fréchet distance


@torch.no_grad()
def image_features(model: AttributeNet, images: torch.Tensor, *, batch_size: int = 128) -> np.ndarray:
    """Penultimate features of ``images`` as float64 (N, feat_dim)."""
    model.eval()
    feats = [model.features(images[i:i + batch_size]).double().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(feats).numpy()


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D), (M, D):
    ``|mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a C_b)^1/2)``.

    The trace of the matrix square root is taken from the eigenvalues of the symmetric PSD matrix
    ``C_a^1/2 C_b C_a^1/2`` (same spectrum as ``C_a C_b``), which stays real and stable for the singular
    covariances of few samples or always-zero ReLU features."""
    a, b = np.asarray(feats_a, dtype=np.float64), np.asarray(feats_b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    vals, vecs = np.linalg.eigh(cov_a)
    root_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    mid = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(mid, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def feature_distance(images_a: torch.Tensor, images_b: torch.Tensor, *,
                     model: Optional[AttributeNet] = None, batch_size: int = 128) -> float:
    """Fréchet distance between two image sets (N, 3, H, W) in [-1, 1] on the regressor's features
    (an FID-like number; use a few hundred images per side or more). ``model`` defaults to the bundled one."""
    model = load_attribute_model() if model is None else model
    return frechet_distance(image_features(model, images_a, batch_size=batch_size),
                            image_features(model, images_b, batch_size=batch_size))


# ----------------------------------------------------------------------------- files


def save_attribute_model(model: AttributeNet, path: Union[str, Path], *, info: Optional[dict] = None) -> None:
    """Write ``path`` (.safetensors, float32) and the config beside it (same stem, .json)."""
    from safetensors.torch import save_file

    path = Path(path)
    sd = {k: (v.detach().float() if v.is_floating_point() else v).cpu().contiguous()
          for k, v in model.state_dict().items()}
    save_file(sd, str(path))
    cfg = {"config": model.config(), **({"info": info} if info else {})}
    path.with_suffix(".json").write_text(json.dumps(cfg, indent=1) + "\n")


def load_attribute_model(path: Union[str, Path, None] = None) -> AttributeNet:
    """Load a regressor (eval mode, CPU, float32); ``path`` None = the bundled ``attributes_128``.
    Raises :class:`CheckpointError` when the files are missing or do not match."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else DATA_DIR / f"{DEFAULT_NAME}.safetensors"
    cfg_path = path.with_suffix(".json")
    if not path.is_file() or not cfg_path.is_file():
        raise CheckpointError(f"attribute model not found: expected {path} and {cfg_path.name}")
    cfg = json.loads(cfg_path.read_text())["config"]
    model = AttributeNet([AttributeInfo(**a) for a in cfg["attributes"]], input_size=cfg["input_size"],
                         widths=cfg["widths"], feat_dim=cfg["feat_dim"])
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path.name} does not match its config {cfg_path.name}: {err}") from None
    return model.eval().requires_grad_(False)
