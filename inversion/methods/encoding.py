"""The one-pass encoder methods, e4e and pSp: encode the aligned photo to W+ and draw it."""
from __future__ import annotations

import torch

from inversion.methods.base import Method, RunRequest
from inversion.methods.starts import fill_starts
from inversion.result import Inversion


def run_encoder(kind: str):
    """The run function of encoder ``kind`` ("e4e" / "psp"): codes from the run's shared encoder pass."""
    def run(request: RunRequest) -> Inversion:
        result = request.starts.inversion(request.models, kind, request.image)
        return Inversion(method=kind, w_plus=result.w_plus, image=result.image, info={"recipe": {"encoder": kind}})
    return run


def run_encoder_batch(kind: str):
    """The batched run of encoder ``kind``: one encoder forward and one synthesis for all the photos."""
    run = run_encoder(kind)

    @torch.no_grad()
    def run_batch(requests: list[RunRequest]) -> list[Inversion]:
        models = requests[0].models
        fill_starts(models, kind, [(r.image, r.starts) for r in requests])
        codes = torch.cat([r.starts.codes(models, kind, r.image) for r in requests])
        drawn = models.generator().synthesis(codes)
        for r, c, d in zip(requests, codes, drawn):
            r.starts.add(models, kind, r.image, c[None], d[None])
        return [run(r) for r in requests]
    return run_batch


E4E = Method(
    "e4e", "e4e encoder",
    "One pass of the e4e encoder: codes kept near W, so edits behave well; reconstruction is coarser.",
    run_encoder("e4e"), needs=("generator", "encoder:e4e"), order=10, run_batch=run_encoder_batch("e4e"),
    how="one encoder pass; codes kept close to W")

PSP = Method(
    "psp", "pSp encoder",
    "One pass of the pSp encoder straight into W+: fast, loses fine detail, edits less reliably.",
    run_encoder("psp"), needs=("generator", "encoder:psp"), order=20, run_batch=run_encoder_batch("psp"),
    how="one encoder pass straight into W+")
