"""Write the compact golden copy in this folder from the full reference set in ../shared/reference/encoders.

Run from the project root: ``python tests/data/encoders/make_compact.py``. Inputs are not stored: the tests
regenerate them from the seeds (``torch.rand(..., generator=manual_seed(seed), float64) * 2 - 1``). Outputs are
stored in float32, which is far finer than the parity tolerances (1e-5 of max |output|).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
FULL = HERE.parents[3] / "shared" / "reference"


def main() -> None:
    ref = FULL / "encoders"
    cases = np.load(ref / "cases.npz")
    feats = np.load(ref / "features_psp.npz")

    # e4e stages 0/3/7 follow from stage 18: rows <= k are identical, later rows repeat row 0. Check it exactly.
    full = cases["e4e_codes"]
    assert np.array_equal(full, cases["e4e_codes_stage18"])
    for k in (0, 3, 7):
        derived = full.copy()
        derived[:, k + 1:] = full[:, :1]
        assert np.array_equal(derived, cases[f"e4e_codes_stage{k}"]), k

    out = {
        "seeds": cases["seeds"],
        "psp_codes": cases["psp_codes"],
        "psp_wplus": cases["psp_wplus"],
        "e4e_codes": full,
        "irse_emb": cases["irse_emb"],
        "idloss_pooled112": cases["idloss_pooled112"],
        "idloss_emb": cases["idloss_emb"],
        # float32 check of the body: c1 (unit 6) is the deepest level float32 can reproduce under this fill
        "psp_c1_crop": feats["psp_c1"][:, :32, :16, :16],
    }
    np.savez_compressed(HERE / "golden.npz", **{k: (v.astype(np.float32) if v.dtype == np.float64 else v)
                                                for k, v in out.items()})

    manifests = {}
    for name in ("psp_encoder", "e4e_encoder", "irse50"):
        manifests[name] = {e["key"]: e["shape"] for e in json.loads((ref / f"{name}.json").read_text())}
    assert manifests["psp_encoder"] == manifests["e4e_encoder"]
    compact = {"encoder": manifests["psp_encoder"], "irse50": manifests["irse50"]}
    (HERE / "manifests.json").write_text(json.dumps(compact, separators=(",", ":")))

    # two public-domain faces for the dlib identity test (see SOURCES.md), aligned by the align reference
    for src, dst in (("grace_hopper_aligned256.png", "hopper128.jpg"), ("astronaut_det0_aligned256.png", "collins128.jpg")):
        Image.open(FULL / "align" / src).convert("RGB").resize((128, 128), Image.LANCZOS).save(HERE / dst, quality=90)


if __name__ == "__main__":
    main()
