"""A tiny, seeded, offline model family for the session and app tests (64 px generator, small encoders).

``tiny_model_set()`` returns a :class:`~inversion.models.ModelSet` whose generator, pSp/e4e encoders and
LPIPS are built in memory (no files), warmed up so the app sees every piece as present. Random weights:
images are not faces, but every code path (shapes, metrics, edits, paste-back, export) runs for real.
"""
from __future__ import annotations

import functools
from typing import Any

import torch

from inversion.checkpoints import CheckpointMissingError
from inversion.encoders import E4EEncoder, EncoderBundle, PSPEncoder
from inversion.lpips import LPIPS
from inversion.models import Family, ModelSet
from inversion.stylegan2 import Generator

SIZE = 64
STYLE_DIM = 64
N_LATENT = 2 * 6 - 2  # 64 px -> 10 W+ rows
TINY = Family("tiny", "Tiny test model 64 px", SIZE, (), {"psp": "tiny_psp", "e4e": "tiny_e4e"}, "tiny")
ENCODER_KW = dict(n_styles=N_LATENT, input_size=SIZE, widths=(8, 8, 16, 16), units=(1, 1, 1, 1), style_dim=STYLE_DIM)


@functools.lru_cache(maxsize=1)
def _parts() -> dict[str, Any]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        g = Generator(SIZE, style_dim=STYLE_DIM, n_mlp=2, channel_multiplier=1, max_channels=32).eval()
        g.requires_grad_(False)
        avg = g.mean_latent(2000, generator=torch.Generator().manual_seed(0))
        bundles = {}
        for kind, cls in (("psp", PSPEncoder), ("e4e", E4EEncoder)):
            enc = cls(**ENCODER_KW).eval().requires_grad_(False)
            bundles[kind] = EncoderBundle(kind=kind, encoder=enc, decoder_state_dict={},
                                          latent_avg=avg.expand(N_LATENT, STYLE_DIM).clone(),
                                          opts={"input_size": SIZE, "output_size": SIZE})
        lpips = LPIPS("alex")
        lpips.load_backbone({f"features.{k}": v.clone() for k, v in lpips.features.state_dict().items()})
    return {"generator": (g, avg), "bundles": bundles, "lpips": lpips}


def _missing(name: str):
    raise CheckpointMissingError(f"{name} is not part of the tiny test family")


class TinyModelSet(ModelSet):
    """A ModelSet of the in-memory tiny family (shared, read-only modules; one instance per test is fine)."""

    def __init__(self) -> None:
        super().__init__(TINY, device=torch.device("cpu"), locate=_missing)

    def _load_generator(self):
        return _parts()["generator"]

    def _load_encoder(self, kind: str):
        return _parts()["bundles"][kind]

    def lpips(self):
        return self._cached("lpips", lambda: _parts()["lpips"])


def tiny_model_set() -> TinyModelSet:
    """A warmed-up tiny model set: generator, both encoders and LPIPS loaded (so they count as present)."""
    ms = TinyModelSet()
    ms.generator()
    ms.encoder("e4e")
    ms.encoder("psp")
    ms.lpips()
    return ms


class OnSecondEncode(TinyModelSet):
    """Tiny set whose e4e/pSp encoder calls :meth:`on_second` while it encodes the second photo (a crash, a
    Ctrl-C, ...: subclasses say which)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def on_second(self) -> None:
        raise NotImplementedError

    def encoder(self, kind):
        bundle = super().encoder(kind)
        outer = self

        class Watched:
            opts = bundle.opts

            def encode(self, images):
                outer.calls += 1
                if outer.calls == 2:
                    outer.on_second()
                return bundle.encode(images)
        return Watched()
