"""Identity metrics: the IR-SE50 ArcFace backbone of pSp/e4e's ID loss, and dlib's face-recognition ResNet.

Images are ``(N, 3, H, W)`` float tensors in ``[-1, 1]`` (aligned FFHQ-style faces).

IR-SE50 (``model_ir_se50.pth`` layout, loads with ``strict=True``): ``input_layer`` + ``body`` exactly as the
encoders' IR-SE50 body, then ``output_layer`` = BatchNorm2d(512), Dropout, Flatten (C, H, W order), Linear(25088, 512),
BatchNorm1d(512); the embedding is divided by its L2 norm. The ID-loss preprocessing crops rows 35..222 and columns
32..219 of a 256x256 image and area-pools the 188x188 crop to 112x112.
"""
from __future__ import annotations

import functools
import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from inversion.align import NoFaceError
from inversion.encoders import FFHQ_WIDTHS, IR50_UNITS, build_ir_se_body

__all__ = [
    "DLIB_SAME_PERSON_DISTANCE",
    "DlibIdentity",
    "FaceNotFoundError",
    "IRSE50",
    "ID_CROP_256",
    "id_preprocess",
    "identity_similarity",
    "load_irse50",
]

ID_CROP_256 = (35, 223, 32, 220)
"""ID-loss crop of a 256x256 image: rows ``[35, 223)``, columns ``[32, 220)`` (188 x 188)."""
DLIB_SAME_PERSON_DISTANCE = 0.6
"""dlib's conventional threshold: descriptor distance below 0.6 = same person (99.38% on LFW per dlib)."""


class FaceNotFoundError(NoFaceError):
    """dlib found no face in an image given to the identity metric (e.g. a failed reconstruction)."""


class IRSE50(nn.Module):
    """ArcFace IR-SE50 backbone ``Backbone(112, 50, 'ir_se')``: ``(N, 3, 112, 112)`` in [-1, 1] -> ``(N, 512)`` unit rows."""

    def __init__(self, *, input_size: int = 112, embedding_dim: int = 512, drop_ratio: float = 0.6) -> None:
        super().__init__()
        if input_size not in (112, 224):
            raise ValueError(f"input_size must be 112 or 224, got {input_size}")
        self.input_size = input_size
        self.input_layer, self.body = build_ir_se_body(widths=FFHQ_WIDTHS, units=IR50_UNITS)
        side = input_size // 16
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(FFHQ_WIDTHS[-1]),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(FFHQ_WIDTHS[-1] * side * side, embedding_dim),
            nn.BatchNorm1d(embedding_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(f"expected (N, 3, {self.input_size}, {self.input_size}) faces, got {tuple(x.shape)}")
        emb = self.output_layer(self.body(self.input_layer(x)))
        return emb / emb.norm(p=2, dim=1, keepdim=True)


def load_irse50(state_dict: dict[str, torch.Tensor]) -> IRSE50:
    """Build :class:`IRSE50` from a ``model_ir_se50.pth`` state dict (strict), in eval mode without gradients."""
    model = IRSE50()
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise ValueError(f"the IR-SE50 weights do not fit the model_ir_se50.pth layout: {err}") from None
    return model.eval().requires_grad_(False)


def id_preprocess(images: torch.Tensor, *, out_size: int = 112) -> torch.Tensor:
    """ID-loss preprocessing: ``(N, 3, H, W)`` -> ``(N, 3, 112, 112)``.

    For 256x256 input this is exactly the reference: crop ``[35:223, 32:220]``, then AdaptiveAvgPool2d(112).
    For other sizes the crop box is scaled by ``H / 256`` and ``W / 256`` (rounded to whole pixels), so it covers
    the same part of an FFHQ-aligned face; :func:`identity_similarity` instead resizes to 256 first.
    """
    h, w = images.shape[-2:]
    top, bottom, left, right = ID_CROP_256
    if (h, w) != (256, 256):
        top, bottom = round(top * h / 256), round(bottom * h / 256)
        left, right = round(left * w / 256), round(right * w / 256)
    return F.adaptive_avg_pool2d(images[:, :, top:bottom, left:right], (out_size, out_size))


def _to_256(images: torch.Tensor) -> torch.Tensor:
    h, w = images.shape[-2:]
    if (h, w) == (256, 256):
        return images
    if h >= 256 and w >= 256:
        return F.adaptive_avg_pool2d(images, (256, 256))
    return F.interpolate(images, size=(256, 256), mode="bilinear", align_corners=False, antialias=True)


def identity_similarity(model: IRSE50, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``(N,)`` of the IR-SE50 embeddings of two batches of aligned faces.

    ``a`` and ``b`` are ``(N, 3, H, W)`` in [-1, 1], any size (each may differ): resized to 256x256 first (area
    pooling when larger, bilinear when smaller), then :func:`id_preprocess`. Runs on the model's device and dtype.
    1.0 = identical embedding; the pSp/e4e ID loss is ``1 - similarity``.
    """
    if a.dim() != 4 or b.dim() != 4 or a.shape[0] != b.shape[0]:
        raise ValueError(f"expected two (N, 3, H, W) batches of equal N, got {tuple(a.shape)} and {tuple(b.shape)}")
    param = next(model.parameters())
    faces = torch.cat([id_preprocess(_to_256(t.to(device=param.device, dtype=param.dtype))) for t in (a, b)])
    emb = model(faces)
    ea, eb = emb.chunk(2)
    return (ea * eb).sum(dim=1)


# --------------------------------------------------------------------------------------------------------------------
# dlib face-recognition ResNet (offline: weights shipped by the face_recognition_models package)


def _face_recognition_models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 'face_recognition_models' package is not installed (pip install face_recognition_models)")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@functools.lru_cache(maxsize=2)
def _dlib_models(landmarks: int) -> tuple[Any, Any, Any, threading.Lock]:
    import dlib  # lazy: optional, heavy import

    root = _face_recognition_models_dir()
    predictor = root / f"shape_predictor_{landmarks}_face_landmarks.dat"
    recognizer = root / "dlib_face_recognition_resnet_model_v1.dat"
    for path in (predictor, recognizer):
        if not path.is_file():
            raise RuntimeError(f"dlib model file missing: {path}")
    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(predictor)),
        dlib.face_recognition_model_v1(str(recognizer)),
        threading.Lock(),  # dlib's objects are not meant for concurrent calls
    )


class DlibIdentity:
    """Second identity measure: dlib's face-recognition ResNet (128-d descriptors, LFW-trained metric).

    ``distance(a, b)`` is the Euclidean distance of the two descriptors; below ``DLIB_SAME_PERSON_DISTANCE`` (0.6)
    dlib calls it the same person. ``similarity(a, b) = 1 - distance`` (1 = identical, > 0.4 = same person by that
    convention). The cosine of dlib descriptors is a poor score: it stays near 0.9 even for different people.
    Each image's largest detected face is used; no face raises :class:`FaceNotFoundError`. Models load lazily on
    first use and are cached per process.
    """

    def __init__(self, *, landmarks: int = 5, upsample: int = 1, jitter: int = 0) -> None:
        if landmarks not in (5, 68):
            raise ValueError(f"landmarks must be 5 or 68, got {landmarks}")
        self.landmarks = landmarks
        self.upsample = upsample
        self.jitter = jitter

    def descriptor(self, image: Image.Image, *, name: str = "image") -> np.ndarray:
        """128-d float64 descriptor of the largest face in ``image``."""
        detector, predictor, recognizer, lock = _dlib_models(self.landmarks)
        pixels = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
        with lock:
            faces = list(detector(pixels, self.upsample))
            if not faces:
                raise FaceNotFoundError(f"No face found in the {name} ({image.width}x{image.height}) by dlib's detector.")
            face = max(faces, key=lambda r: r.width() * r.height())
            shape = predictor(pixels, face)
            descriptor = recognizer.compute_face_descriptor(pixels, shape, self.jitter)
        return np.asarray(descriptor, dtype=np.float64)

    def _pair(self, img_a: Image.Image, img_b: Image.Image) -> tuple[np.ndarray, np.ndarray]:
        return self.descriptor(img_a, name="first image"), self.descriptor(img_b, name="second image (reconstruction)")

    def distance(self, img_a: Image.Image, img_b: Image.Image) -> float:
        """Euclidean descriptor distance; ``< 0.6`` = same person by dlib's convention."""
        da, db = self._pair(img_a, img_b)
        return float(np.linalg.norm(da - db))

    def similarity(self, img_a: Image.Image, img_b: Image.Image) -> float:
        """``1 - distance(a, b)``: 1 = identical descriptors, above 0.4 = same person by dlib's 0.6 convention."""
        return 1.0 - self.distance(img_a, img_b)
