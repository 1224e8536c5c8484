"""Make tests/data/hyperstyle/golden.npz by running the ORIGINAL HyperStyle code (not run by the tests).

Reference: yuval-alaluf/hyperstyle at commit a723c7310312ca5b7f859340027f78e18965acbc, a scratch copy outside the
project at /tmp/hyperstyle_ref (``git show`` of the *.py files of that commit; nothing from it is committed here),
with these scratch-only stubs:

- ``models/stylegan2/op/__init__.py``: pure-PyTorch ``upfirdn2d`` (the file's own ``upfirdn2d_native`` on NHWC, as
  rosinality's CPU path calls it) and ``fused_leaky_relu`` (``leaky_relu(x + bias, 0.2) * sqrt 2``), no CUDA build;
- ``stubs/torchvision/models``: ``resnet34()`` = torchvision's ``layer1..layer4`` of BasicBlocks (same module names;
  their values are overwritten by the strict checkpoint load); ``stubs/matplotlib``: a no-op ``use``;
- ``.cuda()`` removed from ``shared_weights_hypernet.py`` and ``hyperstyle.py``.

Run (from the project root, ~2 min and ~6 GB on 2 cores): ``python tests/data/hyperstyle/make_golden.py``.

Configuration: the official FFHQ architecture (``SharedWeightsHyperNetResNet``, ``input_nc`` 6, 256 px input) with a
256 px config-f decoder (an official output size: 20 hypernetwork outputs, layers_to_tune
0,2,3,5,6,8,9,11,12,14,15,17,18 = the FFHQ list restricted to the layers a 256 px generator has), ``WEncoder(50,
'ir_se')``, 5 refinement passes with ``randomize_noise=False`` and full-size outputs, as ``run_inversion`` does.
The 1024 px model only adds layers 20, 21, 23, 24 of the same ``RefinementBlock`` class.

Weights: float64, ``tests/reference_fill.py`` on the containers' own keys, family "auto" (``decoder.*`` ->
"stylegan2", ``hypernet.*`` / ``encoder.*`` -> "conv"), filled after building the modules in float64 (default
dtype float64). The shared hypernetwork's tensors, stored under ten names, all get the value filled for
``hypernet.shared_weight_hypernet.*`` (the checkpoint holds one tensor under ten names). ``latent_avg``: (14, 512)
``torch.randn`` float64, seed 208. Inputs: ``torch.rand((2, 3, 256, 256), seed 201, float64) * 2 - 1``.
The containers are handed to the original ``HyperStyle(opts)`` constructor through a patched ``torch.load``, so
its own loading code (``__get_keys``, strict loads, W-encoder via ``pSp``) runs.
"""
from __future__ import annotations

import sys
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch

REF = Path("/tmp/hyperstyle_ref")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path[:0] = [str(REF / "stubs"), str(REF), str(ROOT / "tests")]

from reference_fill import fill_tensor  # noqa: E402

SIZE, N_STYLES, ITERS = 256, 14, 5
LAYERS_TO_TUNE = (0, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18)
SHARED = (0, 2, 3, 5, 6, 8, 9, 11, 12)
SEED_X, SEED_AVG = 201, 208
N_PICK = 256  # values sampled per sample and layer, evenly spaced over the flattened delta


def shared_alias(key: str) -> str:
    """``hypernet.refinement_blocks.{i}.hypernet.w1`` -> ``hypernet.shared_weight_hypernet.w1`` (else unchanged)."""
    parts = key.split(".")
    if len(parts) == 5 and parts[:2] == ["hypernet", "refinement_blocks"] and parts[3] == "hypernet":
        return "hypernet.shared_weight_hypernet." + parts[4]
    return key


def fill_container_state(sd: dict) -> dict:
    """Fill every key once; aliases of the shared hypernetwork share the canonical tensor."""
    out: dict = {}
    for k, v in sd.items():
        canon = shared_alias(k)
        if canon not in out:
            out[canon] = fill_tensor(canon, sd[canon], "auto")
        out[k] = out[canon]
    return out


def pick(t: torch.Tensor) -> np.ndarray:
    flat = t.reshape(t.shape[0], -1)
    idx = torch.linspace(0, flat.shape[1] - 1, N_PICK, dtype=torch.float64).round().long()
    return flat[:, idx].numpy()


def main() -> None:
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    from models.hyperstyle import HyperStyle
    from models.hypernetworks.hypernetwork import SharedWeightsHyperNetResNet
    from models.encoders.w_encoder import WEncoder
    from models.stylegan2.model import Generator

    opts = Namespace(output_size=SIZE, encoder_type="SharedWeightsHyperNetResNet", input_nc=6,
                     layers_to_tune=",".join(map(str, LAYERS_TO_TUNE)), n_hypernet_outputs=20,
                     checkpoint_path="HYPERSTYLE", load_w_encoder=True, w_encoder_checkpoint_path="W_ENCODER",
                     w_encoder_type="WEncoder", device="cpu", dataset_type="ffhq_encode", n_iters_per_batch=ITERS,
                     resize_outputs=False, label_nc=0)
    hyper_sd = {f"hypernet.{k}": v for k, v in SharedWeightsHyperNetResNet(opts).state_dict().items()}
    dec_sd = {f"decoder.{k}": v for k, v in Generator(SIZE, 512, 8, channel_multiplier=2).state_dict().items()}
    enc_sd = {f"encoder.{k}": v for k, v in WEncoder(50, "ir_se", opts).state_dict().items()}
    latent_avg = torch.randn((N_STYLES, 512), generator=torch.Generator().manual_seed(SEED_AVG), dtype=torch.float64)
    decoder = fill_container_state(dec_sd)
    containers = {
        "HYPERSTYLE": {"state_dict": {**fill_container_state(hyper_sd), **decoder}, "latent_avg": latent_avg,
                       "opts": {k: v for k, v in vars(opts).items()}},
        "W_ENCODER": {"state_dict": {**fill_container_state(enc_sd), **decoder}, "latent_avg": latent_avg,
                      "opts": {"encoder_type": "WEncoder", "output_size": SIZE}},
    }
    del hyper_sd, enc_sd
    real_load = torch.load
    torch.load = lambda path, *a, **k: containers[path] if path in containers else real_load(path, *a, **k)
    net = HyperStyle(opts).double().eval()
    net.w_encoder.double().eval()
    torch.load = real_load
    del containers

    x = torch.rand((2, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(SEED_X), dtype=torch.float64) * 2 - 1
    out: dict[str, np.ndarray] = {"seeds": np.array([SEED_X, SEED_AVG]), "layers": np.array(LAYERS_TO_TUNE)}
    t0 = time.time()
    y_hat, codes, deltas = None, None, None
    with torch.no_grad():
        out["w_raw"] = net.w_encoder(x)[:, 0].numpy()  # WEncoder output row (all rows equal), before latent_avg
        for it in range(1, ITERS + 1):
            y_hat, latent, deltas, codes, y0 = net.forward(x, y_hat=y_hat, codes=codes, weights_deltas=deltas,
                                                           return_latents=True, resize=False, randomize_noise=False,
                                                           return_weight_deltas_and_codes=True)
            if it == 1:
                out["codes"] = codes.numpy()
                out["y_hat0_crop"] = y0[:, :, 112:144, 112:144].numpy()
            for j in LAYERS_TO_TUNE:
                d = deltas[j]
                out[f"it{it}_l{j}_crop"] = d[:, :4, :4].numpy()
                out[f"it{it}_l{j}_pick"] = pick(d)
                out[f"it{it}_l{j}_sum"] = d.sum(dim=tuple(range(1, d.dim()))).numpy()
                out[f"it{it}_l{j}_abssum"] = d.abs().sum(dim=tuple(range(1, d.dim()))).numpy()
            out[f"it{it}_image_crop"] = y_hat[:, :, 120:136, 120:136].numpy()
            out[f"it{it}_image_sum"] = y_hat.sum(dim=(2, 3)).numpy()
            if it == ITERS:
                out["image_crop"] = y_hat[:, :, 112:144, 112:144].numpy()  # the final full-size image, middle 32 x 32
            print(f"pass {it}: {time.time() - t0:.1f}s, |image| max {y_hat.abs().max():.3e}", flush=True)
            y_hat = net.face_pool(y_hat)
        assert torch.equal(latent, codes)  # the W+ code stays the W-encoder's over the passes
    np.savez_compressed(HERE / "golden.npz", **{k: v.astype(np.float32) if v.dtype == np.float64 else v
                                               for k, v in out.items()})
    print("saved", (HERE / "golden.npz").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
