"""Fit InterFaceGAN directions for the built-in generator, labelled by the bundled attribute regressor.

    python -m training.fit_directions --generator inversion/data/builtin_g128.safetensors --device cuda

Recipe (InterFaceGAN, Shen et al. 2020, on W):

1. sample ``n`` codes ``w = mapping(z)`` (seeded; ``--truncation`` 1 = none), synthesise ``w`` on every layer with
   the generator's stored noise, and predict every attribute with :mod:`editing.attributes` (values in each
   attribute's range; ``glasses`` as a probability);
2. per attribute, fit two linear directions in W (no scikit-learn/scipy):
   - ``svm`` (InterFaceGAN): keep the top and bottom ``ratio`` of the samples by predicted value (labels +1/-1),
     hold out 10 % of them, and solve the primal L2-regularised squared-hinge SVM
     ``reg/2 |a|^2 + mean(max(0, 1 - y (a.w + b))^2)`` (``reg = 1/n_train``, i.e. C = 1 on the sum like the
     scikit-learn default InterFaceGAN used) by L-BFGS in float64; the direction is the boundary normal;
   - ``lstsq``: ridge least squares of the value on all codes; for Gaussian codes this is the average gradient
     of the attribute with respect to w (Stein's lemma), and it uses every sample, not just the tails;
   ``--method auto`` (default) measures both (below) and keeps, per attribute, the more *selective* one;
3. the unit vector, oriented so that + increases the attribute, is saved as ``direction`` (1, style_dim) float32
   in ``OUT_DIR/builtin_<attribute>.safetensors``: the format of the bundled FFHQ files, read by
   :func:`editing.directions.load_direction`.

Faithfulness (written to ``OUT_DIR/builtin_directions.json`` and printed): on ``--eval-n`` held-out codes, each
direction is applied at +/- ``eval_sigmas`` standard deviations of the codes' projection on it (the step ``s`` is
reported), and the mean change of every predicted attribute is measured, also as a fraction of its range: the
target should move a lot, the others little; ``selectivity`` = target change / (target + sum of the others' changes),
1 = only the target moves. The JSON also gives the projection std ``sigma`` per direction (the
registry's strength is in the same units as ``s``: a unit-norm direction times strength), held-out SVM accuracy,
the SVM/least-squares cosine and the cosines between directions.

``skin_tone`` is fitted only when asked (``--skip ''``): it is measured as a side effect of the other edits but is
not offered as an edit.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from editing.attributes import AttributeNet, load_attribute_model, predict_attributes
from editing.directions import BUILTIN_EDITS
from inversion.stylegan2 import Generator
from training.train_encoders import load_generator_file

DEFAULT_OUT_DIR = Path(__file__).resolve().parents[1] / "editing" / "data"
MANIFEST = "builtin_directions.json"


def direction_file(attribute: str) -> str:
    """File name of the direction for ``attribute`` (under ``editing/data``)."""
    return f"builtin_{attribute}.safetensors"


# ----------------------------------------------------------------------------- sampling and labelling


@torch.no_grad()
def synthesize_w(g: Generator, w: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, S, S) of W codes (N, style_dim) on every layer, stored noise."""
    return g.synthesis(w.unsqueeze(1).expand(-1, g.n_latent, -1))


@torch.no_grad()
def label_codes(g: Generator, model: AttributeNet, w: torch.Tensor, *, batch: int = 256) -> torch.Tensor:
    """Predicted attributes (N, A) float32 on the CPU for W codes (N, style_dim) (moved to G's device)."""
    dev = g.input.input.device
    out = []
    for chunk in w.split(batch):
        images = synthesize_w(g, chunk.to(dev)).float().clamp(-1, 1)
        pred = predict_attributes(model, images, batch_size=batch)
        out.append(torch.stack([pred[a.name] for a in model.attributes], 1).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def sample_codes(g: Generator, n: int, *, seed: int, truncation: float = 1.0,
                 w_avg: Optional[torch.Tensor] = None, batch: int = 4096) -> torch.Tensor:
    """``n`` W codes (n, style_dim) float32 on the CPU: ``mapping(z)`` for seeded z, optionally truncated."""
    dev = g.input.input.device
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, g.style_dim, generator=gen)
    w = torch.cat([g.mapping(c.to(dev)).float().cpu() for c in z.split(batch)])
    if truncation != 1.0:
        if w_avg is None:
            raise ValueError("truncation needs w_avg")
        w = w_avg.cpu().reshape(1, -1) + truncation * (w - w_avg.cpu().reshape(1, -1))
    return w


# ----------------------------------------------------------------------------- fitting


def fit_svm(x: torch.Tensor, y: torch.Tensor, *, reg: Optional[float] = None, max_iter: int = 200
            ) -> tuple[torch.Tensor, float]:
    """Linear L2-SVM (squared hinge) by L-BFGS: x (n, D), y (n,) in {-1, +1} -> (normal (D,), bias), float64.

    Minimises ``reg/2 |a|^2 + mean(max(0, 1 - y (x.a + b))^2)``; ``reg`` None = ``1/n`` (C = 1 on the sum)."""
    x, y = x.double(), y.double()
    n, d = x.shape
    reg = 1.0 / n if reg is None else reg
    params = torch.zeros(d + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        a, b = params[:d], params[d]
        margin = (1 - y * (x @ a + b)).clamp_min(0)
        loss = reg / 2 * a.square().sum() + margin.square().mean()
        loss.backward()
        return loss

    opt.step(closure)
    return params[:d].detach().clone(), float(params[d].detach())


def fit_lstsq(x: torch.Tensor, values: torch.Tensor, *, ridge: float = 1e-6) -> torch.Tensor:
    """Ridge least squares of ``values`` (n,) on centred ``x`` (n, D): the coefficient vector (D,), float64.
    ``ridge`` is relative to the mean diagonal of ``x^T x``."""
    x = x.double() - x.double().mean(0)
    v = values.double() - values.double().mean()
    gram = x.T @ x
    gram = gram + ridge * gram.diagonal().mean() * torch.eye(x.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram, x.T @ v)


def _unit(v: torch.Tensor) -> torch.Tensor:
    norm = v.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError("the fitted boundary is degenerate (zero or non-finite normal)")
    return v / norm


def fit_both(w: torch.Tensor, values: torch.Tensor, *, ratio: float = 0.2, holdout: float = 0.1,
             seed: int = 0) -> tuple[dict[str, torch.Tensor], dict]:
    """Unit directions (D,) float32 in W along which ``values`` (n,) increase, by both methods, and fit statistics.

    ``svm``: InterFaceGAN's boundary normal from the top/bottom ``ratio`` of samples (``holdout`` of them kept
    aside for the accuracy); ``lstsq``: ridge regression on all samples (for Gaussian codes this is the average
    gradient of the attribute with respect to w, by Stein's lemma). ``stats``: ``accuracy`` (held-out SVM
    accuracy), ``cos_svm_lstsq``, ``n_train`` (SVM)."""
    if not 0 < ratio <= 0.5:
        raise ValueError(f"ratio must be in (0, 0.5], got {ratio}")
    n = len(values)
    k = max(2, int(n * ratio))
    order = torch.argsort(values.double(), stable=True)
    idx = torch.cat([order[:k], order[-k:]])
    labels = torch.cat([-torch.ones(k), torch.ones(k)]).double()
    perm = torch.randperm(2 * k, generator=torch.Generator().manual_seed(seed))
    n_test = int(2 * k * holdout)
    test, train = perm[:n_test], perm[n_test:]
    x = w.double()[idx] - w.double().mean(0)
    normal, bias = fit_svm(x[train], labels[train])
    accuracy = float(((x[test] @ normal + bias).sign() == labels[test]).double().mean()) if n_test else float("nan")
    dirs = {"svm": _unit(normal), "lstsq": _unit(fit_lstsq(w, values))}
    stats = {"n_train": int(len(train)), "accuracy": accuracy, "cos_svm_lstsq": float(dirs["svm"] @ dirs["lstsq"])}
    return {k: v.float() for k, v in dirs.items()}, stats


def fit_direction(w: torch.Tensor, values: torch.Tensor, *, method: str = "svm", ratio: float = 0.2,
                  holdout: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """The unit direction (D,) of one ``method`` (``svm`` or ``lstsq``, see :func:`fit_both`) and the fit stats."""
    if method not in ("svm", "lstsq"):
        raise ValueError(f"method must be 'svm' or 'lstsq', got {method!r}")
    dirs, stats = fit_both(w, values, ratio=ratio, holdout=holdout, seed=seed)
    return dirs[method], {"method": method, **stats}


# ----------------------------------------------------------------------------- faithfulness


@torch.no_grad()
def edit_effects(g: Generator, model: AttributeNet, w: torch.Tensor, directions: torch.Tensor,
                 steps: torch.Tensor, *, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean change of every predicted attribute when moving W codes along each direction.

    ``w`` (M, D); ``directions`` (K, D) unit rows; ``steps`` (K,) distances. Returns ``(plus, minus)``, each
    (K, A): mean over codes of ``pred(w +/- steps_k * d_k) - pred(w)``."""
    base = label_codes(g, model, w, batch=batch)
    plus, minus = [], []
    for d, s in zip(directions, steps):
        plus.append((label_codes(g, model, w + s * d, batch=batch) - base).mean(0))
        minus.append((label_codes(g, model, w - s * d, batch=batch) - base).mean(0))
    return torch.stack(plus), torch.stack(minus)


def faithfulness_table(names: Sequence[str], attr_names: Sequence[str], ranges: Sequence[float],
                       plus: torch.Tensor, minus: torch.Tensor) -> dict[str, dict]:
    """Per direction, as fractions of each attribute's range: the target's change at + and -, the other
    attributes' largest / mean absolute change, and ``selectivity`` = target / (target + sum of others), with
    each attribute's change averaged over + and - in absolute value (1 = only the target moves)."""
    rng = torch.tensor(ranges, dtype=torch.float64)
    table = {}
    for k, name in enumerate(names):
        j = list(attr_names).index(name)
        p, m = plus[k].double() / rng, minus[k].double() / rng
        mean_abs = (p.abs() + m.abs()) / 2
        others = [i for i in range(len(attr_names)) if i != j]
        both = torch.cat([p[others].abs(), m[others].abs()])
        worst = others[int(mean_abs[others].argmax())] if others else j
        off = float(mean_abs[others].sum()) if others else 0.0
        table[name] = {"target_plus": float(p[j]), "target_minus": float(m[j]),
                       "others_max_abs": float(both.max()) if others else 0.0,
                       "others_mean_abs": float(both.mean()) if others else 0.0,
                       "selectivity": float(mean_abs[j]) / max(float(mean_abs[j]) + off, 1e-12),
                       "most_affected_other": attr_names[worst],
                       "plus": {a: float(p[i]) for i, a in enumerate(attr_names)},
                       "minus": {a: float(m[i]) for i, a in enumerate(attr_names)}}
    return table


# ----------------------------------------------------------------------------- files


def save_direction(path: Path, direction: torch.Tensor, *, metadata: dict[str, str]) -> None:
    """Write ``direction`` (D,) as ``{"direction": (1, D) float32}`` safetensors."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"direction": direction.detach().float().cpu().reshape(1, -1).contiguous()}, str(path),
              metadata=metadata)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", type=Path, required=True, help="builtin_g<size>.safetensors (+ .json beside it)")
    p.add_argument("--attributes", type=Path, default=None, help="attribute regressor (default: the bundled one)")
    p.add_argument("--n", type=int, default=20_000, help="labelled samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, default=1.0)
    p.add_argument("--method", choices=["auto", "svm", "lstsq"], default="auto",
                   help="auto: fit both, keep the more selective per attribute")
    p.add_argument("--ratio", type=float, default=0.2, help="top/bottom fraction per attribute for the SVM")
    p.add_argument("--skip", default="skin_tone", help="comma-separated attributes not to fit ('' = none)")
    p.add_argument("--eval-n", type=int, default=1000, help="held-out codes for the faithfulness measurement")
    p.add_argument("--eval-sigmas", type=float, default=2.0, help="edit step in projection standard deviations")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict:
    """Fit, save and measure the directions; returns the manifest written to ``OUT_DIR/builtin_directions.json``."""
    args = parse_args(argv)
    t0 = time.time()
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    g, w_avg = load_generator_file(args.generator)
    g = g.to(dev).eval().requires_grad_(False)
    model = load_attribute_model(args.attributes).to(dev)
    attr_names = [a.name for a in model.attributes]
    skip = {s for s in args.skip.split(",") if s}
    unknown = skip - set(attr_names)
    if unknown:
        raise SystemExit(f"--skip names unknown attributes {sorted(unknown)}; the regressor has {attr_names}")
    names = [a for a in attr_names if a not in skip]

    w = sample_codes(g, args.n, seed=args.seed, truncation=args.truncation, w_avg=w_avg)
    values = label_codes(g, model, w, batch=args.batch)
    t_label = time.time() - t0
    print(f"labelled {args.n} samples in {t_label:.1f} s on {dev}")
    spread = {a: [float(values[:, j].mean()), float(values[:, j].std())] for j, a in enumerate(attr_names)}

    candidates: dict[str, list[torch.Tensor]] = {"svm": [], "lstsq": []}
    stats = {}
    for name in names:
        dirs, stats[name] = fit_both(w, values[:, attr_names.index(name)], ratio=args.ratio, seed=args.seed)
        for method, d in dirs.items():
            candidates[method].append(d)
    t_fit = time.time() - t0 - t_label

    # faithfulness of each candidate set; "auto" keeps, per attribute, the more selective one
    w_eval = sample_codes(g, args.eval_n, seed=args.seed + 1, truncation=args.truncation, w_avg=w_avg)
    ranges = [a.high - a.low for a in model.attributes]
    center = w.mean(0)
    methods = ["svm", "lstsq"] if args.method == "auto" else [args.method]
    evaluated = {}
    for method in methods:
        directions = torch.stack(candidates[method])
        sigmas = ((w - center) @ directions.T).std(0)
        steps = args.eval_sigmas * sigmas
        plus, minus = edit_effects(g, model, w_eval, directions, steps, batch=args.batch)
        evaluated[method] = (directions, sigmas, steps,
                             faithfulness_table(names, attr_names, ranges, plus, minus))
    chosen = {name: max(methods, key=lambda m: evaluated[m][3][name]["selectivity"]) for name in names}
    directions = torch.stack([evaluated[chosen[n]][0][k] for k, n in enumerate(names)])
    sigmas = torch.stack([evaluated[chosen[n]][1][k] for k, n in enumerate(names)])
    steps = torch.stack([evaluated[chosen[n]][2][k] for k, n in enumerate(names)])
    table = {n: evaluated[chosen[n]][3][n] for n in names}

    gen_name = Path(args.generator).name
    records = {}
    for k, name in enumerate(names):
        file = direction_file(name)
        save_direction(args.out_dir / file, directions[k], metadata={
            "attribute": name, "generator": gen_name, "method": chosen[name], "space": "W",
            "fitted_by": "training/fit_directions.py"})
        records[name] = {"file": file, "method": chosen[name], "sigma": float(sigmas[k]),
                         "eval_step": float(steps[k]),
                         "suggested_default_strength": round(float(2 * sigmas[k]), 2),
                         "suggested_strength_limit": round(float(4 * sigmas[k]), 2),
                         **stats[name], "effect": table[name],
                         "selectivity_by_method": {m: evaluated[m][3][name]["selectivity"] for m in methods}}
    cos = directions @ directions.T
    manifest = {"generator": gen_name, "space": "W (applied to every W+ layer)", "n_samples": args.n,
                "seed": args.seed, "truncation": args.truncation, "method": args.method, "ratio": args.ratio,
                "regressor": str(args.attributes.name) if args.attributes else "attributes_128 (bundled)",
                "eval_n": args.eval_n, "eval_sigmas": args.eval_sigmas,
                "effect_units": "mean change of the regressor's prediction over eval codes, as a fraction of the "
                                "attribute's range; plus = w + eval_step * d, minus = w - eval_step * d",
                "label_mean_std": spread, "directions": records,
                "cosines": {a: {b: round(float(cos[i, j]), 4) for j, b in enumerate(names)}
                            for i, a in enumerate(names)},
                "seconds": {"label": round(t_label, 1), "fit": round(t_fit, 1), "total": round(time.time() - t0, 1)},
                "device": str(dev)}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")

    print(f"{'attribute':<12} {'method':>6} {'acc':>6} {'cos_ls':>6} {'sigma':>7} {'step':>7} {'target+':>8} "
          f"{'target-':>8} {'oth_max':>8} {'oth_mean':>8} {'select':>6}  most affected")
    for name in names:
        r, e = records[name], records[name]["effect"]
        acc = "nan" if math.isnan(r["accuracy"]) else f"{r['accuracy']:.3f}"
        print(f"{name:<12} {r['method']:>6} {acc:>6} {r['cos_svm_lstsq']:>6.3f} {r['sigma']:>7.3f} "
              f"{r['eval_step']:>7.3f} {e['target_plus']:>+8.3f} {e['target_minus']:>+8.3f} "
              f"{e['others_max_abs']:>8.3f} {e['others_mean_abs']:>8.3f} {e['selectivity']:>6.3f}  "
              f"{e['most_affected_other']}")
    print("suggested registry lines (editing/directions.py, BUILTIN_EDITS):")
    labels = {e.name: e.label for e in BUILTIN_EDITS}
    for name in names:
        r = records[name]
        label = labels.get(f"builtin_{name}", name.replace("_", " ").capitalize())
        print(f'    _builtin("{name}", "{label}", {r["suggested_default_strength"]}, {r["suggested_strength_limit"]}),')
    print(f"wrote {len(names)} directions and {MANIFEST} to {args.out_dir} in {time.time() - t0:.1f} s")
    return manifest


if __name__ == "__main__":
    main()
