"""Lazily loaded, cached models of one model family on one device.

Two families:
- ``"ffhq"``: the official FFHQ 1024 weights from the Hub (through :mod:`inversion.checkpoints`);
- ``"builtin"``: the small 128 px set shipped in ``inversion/data`` (works offline; see ``training/README.md``).

Every model is loaded on first use, once (thread-safe), and kept. Nothing is loaded at import or construction.
A missing file raises :class:`~inversion.checkpoints.CheckpointMissingError` with a plain message.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

from inversion import checkpoints
from inversion.checkpoints import CheckpointError, CheckpointMissingError
from inversion.stylegan2 import Generator, generator_from_state_dict, load_generator

if TYPE_CHECKING:  # pragma: no cover
    from inversion.pieces import Piece

DATA = Path(__file__).resolve().parent / "data"
Locator = Callable[[str], Path]


@dataclass(frozen=True)
class Family:
    """What a model family provides: which registry files (or bundled files) back which model."""

    name: str
    label: str
    size: int
    generator_files: tuple[str, ...]  # registry names, tried in order (FFHQ: stylegan2, then e4e/pSp decoders)
    encoder_files: dict[str, str]
    edit_kind: str  # the generator kind editing.list_edits() understands


FAMILIES: dict[str, Family] = {
    "ffhq": Family("ffhq", "FFHQ 1024 (official weights)", 1024,
                   ("stylegan2_ffhq", "e4e_ffhq", "psp_ffhq"), {"psp": "psp_ffhq", "e4e": "e4e_ffhq"}, "ffhq"),
    "builtin": Family("builtin", "Built-in small faces 128 (offline)", 128,
                      ("builtin_g128",), {"psp": "builtin_psp128", "e4e": "builtin_e4e128"}, "builtin"),
}


def choose_device(choice: str = "auto") -> torch.device:
    """The device the app and the CLI run on, chosen in this one place, with the backend settings the benchmark
    measured them with (:func:`inversion.device.setup_device`: cuDNN autotuning off, bounded workspace, TF32).
    ``"auto"``: CUDA when present, else the CPU; ``"cpu"`` / ``"cuda"`` as asked (ValueError when CUDA is asked
    for but absent)."""
    from inversion.device import setup_device

    if choice not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {choice!r}; choose auto, cpu or cuda")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but PyTorch sees no CUDA GPU here")
    return setup_device(choice)


def bundled_path(name: str) -> Path:
    """Path of a built-in model file (``inversion/data/<name>.safetensors``); raises if absent."""
    path = DATA / f"{name}.safetensors"
    if not path.is_file():
        raise CheckpointMissingError(f"The built-in model file {path.name} is missing from inversion/data.")
    return path


def read_bundled(name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State dict and JSON config (``<name>.json`` beside it) of a built-in model."""
    from safetensors.torch import load_file

    path = bundled_path(name)
    config_path = path.with_suffix(".json")
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    return load_file(str(path)), config


class ModelSet:
    """The models of one family on one device, loaded on demand and cached.

    ``locate(name) -> Path`` finds a registry file (default: :func:`inversion.checkpoints.fetch`, which may
    download); the app passes one that only looks at what its background downloader has finished.
    """

    def __init__(self, family: "str | Family" = "ffhq", *, device: Optional[torch.device] = None,
                 locate: Optional[Locator] = None) -> None:
        if isinstance(family, str) and family not in FAMILIES:
            raise ValueError(f"unknown model family {family!r}; choose one of {sorted(FAMILIES)}")
        self.family = FAMILIES[family] if isinstance(family, str) else family
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._locate = locate or (lambda name: checkpoints.fetch(name))
        self._cache: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # -- caching ------------------------------------------------------------------------------
    def _cached(self, key: str, build: Callable[[], Any]) -> Any:
        with self._guard:
            if key in self._cache:
                return self._cache[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._cache:
                value = build()
                with self._guard:
                    self._cache[key] = value
        return self._cache[key]

    def load_piece(self, piece: "Piece") -> Any:
        """A model piece (:mod:`inversion.pieces`), loaded once; cached under ``piece.key``."""
        from inversion.pieces import BASE_PIECES

        if piece.key in BASE_PIECES:  # the base loaders below cache themselves
            return piece.load(self)
        return self._cached(piece.key, lambda: piece.load(self))

    def loaded(self) -> list[str]:
        """Names of the models already in memory."""
        with self._guard:
            return sorted(self._cache)

    # -- generator ----------------------------------------------------------------------------
    def generator(self) -> Generator:
        """The shared, frozen generator (eval mode, no gradients). Never modify it: PTI tunes a copy."""
        return self._cached("generator", self._load_generator)[0]

    def latent_avg(self) -> torch.Tensor:
        """Average W code (1, style_dim): the checkpoint's own, else the mean of 10k mapped z (seeded)."""
        avg = self._cached("generator", self._load_generator)[1]
        if avg is None:
            g = self.generator()
            avg = self._cached("latent_avg", lambda: g.mean_latent(10_000, generator=torch.Generator(
                device=self.device).manual_seed(0)))
        return avg

    def _load_generator(self) -> tuple[Generator, Optional[torch.Tensor]]:
        if self.family.name == "builtin":
            sd, config = read_bundled("builtin_g128")
            latent_avg = sd.pop("latent_avg", None)
            if latent_avg is None and "latent_avg" in config:  # training/train_gan.py stores it in the JSON
                latent_avg = torch.tensor(config["latent_avg"], dtype=torch.float32)
            g = generator_from_state_dict({k: v.float() for k, v in sd.items()})
            return self._prepare(g), None if latent_avg is None else latent_avg.reshape(1, -1).float().to(self.device)
        errors = []
        for name in self.family.generator_files:
            try:
                path = self._locate(name)
            except CheckpointMissingError as err:
                errors.append(str(err))
                continue
            container = checkpoints.load_torch_file(path)
            if "state_dict" in container:  # pSp / e4e: the decoder is the FFHQ generator
                sd = {k[len("decoder."):]: v for k, v in container["state_dict"].items() if k.startswith("decoder.")}
                g, avg = load_generator(sd)[0], container.get("latent_avg")
                avg = None if avg is None else torch.as_tensor(avg).float().reshape(-1, g.style_dim)[:1]
            else:
                g, avg = load_generator(container)
            del container
            return self._prepare(g), None if avg is None else avg.to(self.device)
        raise CheckpointMissingError("No FFHQ generator is available yet: " + " | ".join(errors))

    def _prepare(self, module: torch.nn.Module) -> Any:
        return module.to(self.device).eval().requires_grad_(False)

    # -- encoders -----------------------------------------------------------------------------
    def encoder(self, kind: str):
        """The pSp or e4e encoder bundle (``encode(images_256) -> W+``), without its decoder copy."""
        if kind not in self.family.encoder_files:
            raise ValueError(f"unknown encoder {kind!r}")
        return self._cached(f"encoder:{kind}", lambda: self._load_encoder(kind))

    def _load_encoder(self, kind: str):
        from inversion.encoders import load_encoder_checkpoint

        name = self.family.encoder_files[kind]
        if self.family.name == "builtin":
            from inversion.encoders import load_bundled_encoder

            bundle = load_bundled_encoder(*read_bundled(name), kind=kind)
        else:
            bundle = load_encoder_checkpoint(checkpoints.load_torch_file(self._locate(name)), kind)
        bundle.decoder_state_dict.clear()  # the generator is loaded once, by generator()
        self._prepare(bundle.encoder)
        return bundle

    # -- metrics models -----------------------------------------------------------------------
    def lpips(self):
        """LPIPS (VGG16 trunk from the Hub, bundled v0.1 heads)."""
        def build():
            from inversion.lpips import LPIPS

            path = self._locate("vgg16")
            model = LPIPS("vgg")
            model.load_backbone(checkpoints.load_safetensors_subset(path, "features."))
            return self._prepare(model)
        return self._cached("lpips", build)

    def identity(self):
        """IR-SE50 ArcFace backbone for identity similarity."""
        def build():
            from inversion.identity import load_irse50

            try:
                return self._prepare(load_irse50(checkpoints.load_torch_file(self._locate("irse50"))))
            except ValueError as err:
                raise CheckpointError(str(err)) from None
        return self._cached("identity", build)
