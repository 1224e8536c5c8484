"""Issue 8's measured table on the built-in set: per method, on held-out procedural faces and generated faces,
MSE, attribute error of the reconstruction, code spread, and edit faithfulness of age / smile / yaw.

    python -m bench.builtin_table --n 200 --n-opt 8 --out bench/results/builtin_table.md

Encoders run on all ``n`` images of each set (batched); the per-image optimization methods on the first ``n_opt``
(they cost seconds per image on a CPU). Attribute error = mean |regressor(reconstruction) - regressor(input)| over
the 9 attributes (both through the bundled regressor, so it measures what the inversion kept, not the regressor's
own error). Edit faithfulness: on e4e inversions of generated faces, +/- the direction's default strength; the
target attribute's mean change (signed, +strength minus -strength, halved) and the others' mean |change|.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from editing import EditRequest, apply_edits
from editing.attributes import load_attribute_model, predict_attributes
from editing.directions import get_edit
from inversion import metrics
from inversion.methods import METHODS, evaluate, invert
from inversion.models import ModelSet
from training.faces import face_batch


def attribute_table(model, images: torch.Tensor) -> torch.Tensor:
    """(N, A) regressor predictions, attribute order of the regressor."""
    pred = predict_attributes(model, images)
    return torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in pred.values()], dim=1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--n-opt", type=int, default=8)
    p.add_argument("--out", type=Path, default=Path("bench/results/builtin_table.md"))
    args = p.parse_args()
    torch.manual_seed(0)
    models = ModelSet("builtin")
    g = models.generator()
    reg = load_attribute_model()
    with torch.no_grad():
        z = torch.randn(args.n, g.style_dim, generator=torch.Generator().manual_seed(1234))
        w = models.latent_avg() + 0.7 * (g.mapping(z) - models.latent_avg())
        generated = g.synthesis(w[:, None].repeat(1, g.n_latent, 1), "random", generator=torch.Generator().manual_seed(5))
    procedural, _ = face_batch(args.n, seed=98765, size=g.size)
    sets = {"generated": generated.clamp(-1, 1), "procedural (held-out)": procedural}
    rows = []
    for set_name, images in sets.items():
        truth_attr = attribute_table(reg, images)
        for method in METHODS.order:
            n = args.n if not METHODS[method].has_presets else min(args.n_opt, args.n)
            start = time.perf_counter()
            recs, spreads, mses = [], [], []
            for i in range(n):
                inv = invert(models, method, images[i:i + 1], preset="fast")
                m = evaluate(models, inv, images[i:i + 1])
                recs.append(inv.image.clamp(-1, 1))
                spreads.append(m["code_spread"])
                mses.append(m["mse"])
            rec_attr = attribute_table(reg, torch.cat(recs))
            rows.append((set_name, method, n, sum(mses) / n, float((rec_attr - truth_attr[:n]).abs().mean()),
                         sum(spreads) / n, (time.perf_counter() - start) / n))
            print(rows[-1], flush=True)
    # edit faithfulness on e4e inversions of generated faces
    names = list(predict_attributes(reg, generated[:1]).keys())
    edit_rows = []
    k = min(args.n, 64)
    with torch.no_grad():
        bundle = models.encoder("e4e")
        w_plus = bundle.encode(metrics.match_size(generated[:k], 256 if bundle.opts.get("input_size", 256) == 256 else
                                                  int(bundle.opts["input_size"])))
    for attr in ("age", "smile", "yaw"):
        spec = get_edit(f"builtin_{attr}")
        s = spec.default_strength
        from inversion.result import Inversion
        outs = []
        for sign in (1.0, -1.0):
            codes = torch.cat([apply_edits(Inversion("e4e", w_plus[i:i + 1], generated[i:i + 1]),
                                           [EditRequest(spec.name, sign * s)], generator=g, generator_kind="builtin")
                               for i in range(k)])
            with torch.no_grad():
                outs.append(attribute_table(reg, g.synthesis(codes).clamp(-1, 1)))
        delta = (outs[0] - outs[1]) / 2
        j = names.index(attr)
        others = torch.cat([delta[:, :j], delta[:, j + 1:]], dim=1).abs().mean()
        edit_rows.append((attr, s, float(delta[:, j].mean()), float(others)))
        print(edit_rows[-1], flush=True)
    lines = ["# Built-in set: inversion and edit quality (CPU, `python -m bench.builtin_table`)", "",
             "| set | method | images | MSE | attribute error | code spread | s / image |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d:.4f} | {e:.4f} | {f:.3f} | {h:.2f} |" for a, b, c, d, e, f, h in rows]
    lines += ["", f"Edit faithfulness (e4e inversions of {k} generated faces, +/- default strength):", "",
              "| edit | strength | target change | others, mean abs change |", "|---|---|---|---|"]
    lines += [f"| {a} | {b:.2f} | {c:+.3f} | {d:.3f} |" for a, b, c, d in edit_rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
