"""The one-pass encoder methods, e4e and pSp: encode the aligned photo to W+ and draw it."""
from __future__ import annotations

from inversion.methods.base import Method, RunRequest
from inversion.result import Inversion


def run_encoder(kind: str):
    """The run function of encoder ``kind`` ("e4e" / "psp"): codes from the run's shared encoder pass."""
    def run(request: RunRequest) -> Inversion:
        result = request.starts.inversion(request.models, kind, request.image)
        return Inversion(method=kind, w_plus=result.w_plus, image=result.image, info={"recipe": {"encoder": kind}})
    return run


E4E = Method(
    "e4e", "e4e encoder",
    "One pass of the e4e encoder: codes kept near W, so edits behave well; reconstruction is coarser.",
    run_encoder("e4e"), needs=("generator", "encoder:e4e"), order=10,
    how="one encoder pass; codes kept close to W")

PSP = Method(
    "psp", "pSp encoder",
    "One pass of the pSp encoder straight into W+: fast, loses fine detail, edits less reliably.",
    run_encoder("psp"), needs=("generator", "encoder:psp"), order=20,
    how="one encoder pass straight into W+")
