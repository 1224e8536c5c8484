"""Encoder passes shared by the methods of one run: every method that starts from e4e codes (W, W+, PTI) and
the e4e method itself use ONE encoder pass per photo (and the e4e reconstruction is drawn only when the e4e
method asks for it)."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Optional

import torch

from inversion import metrics
from inversion.checkpoints import CheckpointError
from inversion.result import Inversion

if TYPE_CHECKING:  # pragma: no cover
    from inversion.models import ModelSet


def encoder_input(image: torch.Tensor, size: int = 256) -> torch.Tensor:
    """The encoders' input: the aligned image area-resized to ``size`` (pSp/e4e read 256 px)."""
    return metrics.match_size(image, size)


class StartCache:
    """Encoder codes (and, on demand, their reconstruction) per (model set, encoder, photo), for one run.

    Photos are matched by value (``torch.equal``), so a run over one photo encodes it once whatever the number
    of methods; make a new cache per run (it holds tensors on the models' device).
    """

    def __init__(self) -> None:
        self._entries: list[tuple[int, str, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]] = []
        self._lock = threading.Lock()
        self.encoder_passes = 0
        """How many encoder passes the cache has run (each photo and encoder once)."""

    @staticmethod
    def _owner(models: "ModelSet") -> int:
        """The model set's identity, also when seen through a wrapper (``_models``: the session's error view)."""
        return id(getattr(models, "_models", models))

    def _find(self, models: "ModelSet", kind: str, image: torch.Tensor) -> Optional[int]:
        for i, (owner, k, photo, _, _) in enumerate(self._entries):
            if owner == self._owner(models) and k == kind and photo.shape == image.shape and photo.device == image.device \
                    and torch.equal(photo, image):
                return i
        return None

    @torch.no_grad()
    def codes(self, models: "ModelSet", kind: str, image: torch.Tensor) -> torch.Tensor:
        """W+ codes (1, n_latent, dim) of ``kind``'s encoder for ``image`` (1, 3, S, S) in [-1, 1]."""
        with self._lock:
            found = self._find(models, kind, image)
            if found is not None:
                return self._entries[found][3]
            bundle = models.encoder(kind)
            w_plus = bundle.encode(encoder_input(image, int(bundle.opts.get("input_size", 256))))
            self.encoder_passes += 1
            self._entries.append((self._owner(models), kind, image.detach().clone(), w_plus, None))
            return w_plus

    def add(self, models: "ModelSet", kind: str, image: torch.Tensor, w_plus: torch.Tensor,
            drawn: Optional[torch.Tensor] = None) -> None:
        """Store codes (and their synthesis) computed elsewhere, e.g. by one batched encoder pass over several
        faces, so the methods of a run over ``image`` use them instead of encoding it again. Codes already
        stored are kept; a synthesis is added to stored codes that have none."""
        with self._lock:
            found = self._find(models, kind, image)
            if found is None:
                self._entries.append((self._owner(models), kind, image.detach().clone(), w_plus, drawn))
            elif drawn is not None and self._entries[found][4] is None:
                self._entries[found] = (*self._entries[found][:4], drawn)

    def has(self, models: "ModelSet", kind: str, image: torch.Tensor) -> bool:
        """Whether ``kind``'s codes for ``image`` are stored."""
        with self._lock:
            return self._find(models, kind, image) is not None

    def try_codes(self, models: "ModelSet", kind: str, image: torch.Tensor) -> Optional[torch.Tensor]:
        """:meth:`codes`, or ``None`` when that encoder's weights are missing or unreadable."""
        try:
            return self.codes(models, kind, image)
        except (CheckpointError, OSError):
            return None

    @torch.no_grad()
    def inversion(self, models: "ModelSet", kind: str, image: torch.Tensor) -> Inversion:
        """The encoder's result: its codes and their synthesis with the shared generator (drawn once)."""
        w_plus = self.codes(models, kind, image)
        with self._lock:
            i = self._find(models, kind, image)
            owner, k, photo, codes, drawn = self._entries[i]
            if drawn is None:
                drawn = models.generator().synthesis(codes)
                self._entries[i] = (owner, k, photo, codes, drawn)
        return Inversion(method=kind, w_plus=w_plus, image=drawn)


@torch.no_grad()
def fill_starts(models: "ModelSet", kind: str, pairs: "list[tuple[torch.Tensor, StartCache]]") -> None:
    """One batched ``kind`` encoder pass over the photos (``(image, its cache)`` pairs) whose codes are not stored
    yet, each photo's codes stored in its own cache (batch jobs: N photos, one encoder forward). Raises what
    ``models.encoder`` raises when the encoder is missing."""
    missing = [(image, cache) for image, cache in pairs if not cache.has(models, kind, image)]
    if not missing:
        return
    bundle = models.encoder(kind)
    images = torch.cat([image for image, _ in missing])
    w_plus = bundle.encode(encoder_input(images, int(bundle.opts.get("input_size", 256))))
    for (image, cache), codes in zip(missing, w_plus):
        cache.add(models, kind, image, codes[None])
        cache.encoder_passes += 1


def try_fill_starts(models: "ModelSet", kind: str, pairs: "list[tuple[torch.Tensor, StartCache]]") -> bool:
    """:func:`fill_starts`; False (nothing stored) when that encoder's weights are missing or unreadable, as
    :meth:`StartCache.try_codes` answers for one photo."""
    try:
        fill_starts(models, kind, pairs)
    except (CheckpointError, OSError):
        return False
    return True
