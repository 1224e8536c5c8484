"""The original authors' code, timed side by side with ours (benchmark only; never imported by the project).

The reference repositories are NOT part of this project and are never committed. They are fetched into the
git-ignored scratch folder ``.bench_refs/`` (see bench/README.md):

- ``.bench_refs/stylegan2-pytorch``   rosinality/stylegan2-pytorch (Generator, CUDA ops JIT-compiled with ninja/nvcc)
- ``.bench_refs/encoder4editing``     omertov/encoder4editing (Encoder4Editing, pSp's GradualStyleEncoder, its decoder)
- ``.bench_refs/stylegan2-ada-pytorch`` NVlabs/stylegan2-ada-pytorch (the generator inside PTI's ``ffhq.pkl``;
  PTI's own ``torch_utils`` is byte-identical to it)

Each task runs in its own process (``python -m bench.reference TASK ...``): the repositories' top-level module
names (``model``, ``op``, ``models``, ``training``) and their JIT extension names would clash in one process, and
a crashing or hanging reference must not take the benchmark down. Every task loads the SAME seeded random weights
as our side (our ``Generator`` state dict is key-identical to rosinality's; for NVlabs' generator the keys are
renamed, and the image is checked against ours). Loss loops (projector, PTI) are written here from the papers'
recipes around the reference generators, with OUR LPIPS module, so the loss costs the same on both sides.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
REFS = ROOT / ".bench_refs"
REPOS = {"rosinality": REFS / "stylegan2-pytorch", "e4e": REFS / "encoder4editing",
         "ada": REFS / "stylegan2-ada-pytorch"}
LABELS = {"rosinality": "rosinality/stylegan2-pytorch", "e4e": "omertov/encoder4editing",
          "ada": "NVlabs/stylegan2-ada-pytorch (PTI's generator)"}


def ext_dir(repo: str) -> Path:
    """Per-repository TORCH_EXTENSIONS_DIR (the repos reuse the extension names 'fused'/'upfirdn2d')."""
    base = Path(os.environ.get("BENCH_EXT_DIR", Path(tempfile.gettempdir()) / "bench_torch_ext"))
    return base / repo


def available() -> dict[str, bool]:
    return {name: (path / ("model.py" if name == "rosinality" else "README.md")).is_file()
            for name, path in REPOS.items()}


# ----------------------------------------------------------------------------------------------- importing

class _NoExtension:
    """Stands in for a JIT extension that was not built; any use raises."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        raise RuntimeError(f"the CUDA extension {self._name!r} was not built")


def _import_with_stub_loader(module: str):
    """Import ``module`` with ``torch.utils.cpp_extension.load`` replaced by a stub (no compilation)."""
    import torch.utils.cpp_extension as ce

    real = ce.load
    ce.load = lambda *a, **k: _NoExtension(k.get("name") or (a[0] if a else "?"))
    try:
        return importlib.import_module(module)
    finally:
        ce.load = real


def _native_lrelu(input, bias=None, negative_slope=0.2, scale=2 ** 0.5):
    if bias is not None:
        rest = [1] * (input.ndim - bias.ndim - 1)
        input = input + bias.view(1, bias.shape[0], *rest)
    return F.leaky_relu(input, negative_slope) * scale


def _drop_modules(prefixes: tuple[str, ...]) -> None:
    for name in list(sys.modules):
        if name in prefixes or name.startswith(tuple(p + "." for p in prefixes)):
            del sys.modules[name]


def _no_jit(repo: str) -> bool:
    """``BENCH_NO_JIT=rosinality,e4e`` (set by bench.run when a background build failed): don't try again."""
    return repo in os.environ.get("BENCH_NO_JIT", "").split(",")


def import_rosinality(device: torch.device) -> tuple[types.ModuleType, str]:
    """rosinality's ``model`` module and how its ops run (compiled CUDA / native)."""
    os.environ["TORCH_EXTENSIONS_DIR"] = str(ext_dir("rosinality"))
    sys.path.insert(0, str(REPOS["rosinality"]))
    if device.type == "cuda":
        try:
            if _no_jit("rosinality"):
                raise RuntimeError("its background build failed (see logs/build_rosinality.log)")
            return importlib.import_module("model"), "compiled CUDA ops (its JIT build)"
        except Exception as err:  # noqa: BLE001 - fall back, and say so
            reason = f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:200] if str(err).strip() else ''}"
            _drop_modules(("model", "op"))
            model = _import_with_stub_loader("model")
            up = sys.modules["op.upfirdn2d"]

            def native_upfirdn2d(input, kernel, up_=1, down=1, pad=(0, 0), **kw):
                up_ = kw.get("up", up_)
                u = (up_, up_) if isinstance(up_, int) else tuple(up_)
                d = (down, down) if isinstance(down, int) else tuple(down)
                p = (pad[0], pad[1], pad[0], pad[1]) if len(pad) == 2 else tuple(pad)
                return up.upfirdn2d_native(input, kernel, *u, *d, *p)
            model.upfirdn2d = native_upfirdn2d
            model.fused_leaky_relu = _native_lrelu
            sys.modules["op.fused_act"].fused_leaky_relu = _native_lrelu
            return model, f"its pure-PyTorch fallback ops (CUDA JIT build FAILED: {reason})"
    return _import_with_stub_loader("model"), "its native PyTorch CPU op paths"


def import_e4e(device: torch.device) -> tuple[types.ModuleType, Any, str]:
    """e4e's encoders module, its decoder ``Generator`` class (or None when its ops cannot run), a label."""
    os.environ["TORCH_EXTENSIONS_DIR"] = str(ext_dir("e4e"))
    sys.path.insert(0, str(REPOS["e4e"]))
    if device.type == "cuda":
        try:
            if _no_jit("e4e"):
                raise RuntimeError("its background build failed")
            enc = importlib.import_module("models.encoders.psp_encoders")
            gen = importlib.import_module("models.stylegan2.model").Generator
            return enc, gen, "e4e's own decoder with its compiled CUDA ops"
        except Exception as err:  # noqa: BLE001
            _drop_modules(("models",))
            enc = _import_with_stub_loader("models.encoders.psp_encoders")
            return enc, None, f"e4e CUDA JIT build FAILED ({type(err).__name__}); decoder = rosinality's Generator"
    enc = _import_with_stub_loader("models.encoders.psp_encoders")
    return enc, None, "e4e's decoder has no CPU op path; decoder = rosinality's Generator (same architecture)"


def import_ada(device: torch.device) -> tuple[types.ModuleType, str]:
    """NVlabs' ``training.networks`` (PTI's generator); its ops build lazily on first CUDA use."""
    os.environ["TORCH_EXTENSIONS_DIR"] = str(ext_dir("ada"))
    _drop_modules(("training", "torch_utils", "dnnlib"))
    sys.path.insert(0, str(REPOS["ada"]))
    if importlib.util.find_spec("requests") is None:  # dnnlib.util imports it for downloads only
        sys.modules["requests"] = types.ModuleType("requests")
    try:
        importlib.import_module("distutils.util")
    except ImportError:  # Python >= 3.12 without setuptools' shim: dnnlib.util needs only strtobool
        dist, util = types.ModuleType("distutils"), types.ModuleType("distutils.util")
        util.strtobool = lambda v: {"y": 1, "yes": 1, "t": 1, "true": 1, "on": 1, "1": 1}.get(str(v).lower(), 0)
        dist.util = util
        sys.modules.update({"distutils": dist, "distutils.util": util})
    networks = importlib.import_module("training.networks")
    import torch.utils.cpp_extension as ce

    if not getattr(ce.load, "_registers_module", False):
        real_load = ce.load

        def load_and_register(*a, **k):
            # NVlabs' custom_ops.get_plugin() imports the built module by name, which torch >= 1.x's load() no
            # longer puts in sys.modules: register it (the build itself is unchanged)
            module = real_load(*a, **k)
            sys.modules[k.get("name") or a[0]] = module
            return module
        load_and_register._registers_module = True  # type: ignore[attr-defined]
        ce.load = load_and_register
    if _no_jit("ada") or device.type != "cuda":
        custom_ops = importlib.import_module("torch_utils.custom_ops")

        def no_plugin(module_name, sources, **kw):
            raise RuntimeError("plugin build skipped (failed before, or not on CUDA)")
        custom_ops.get_plugin = no_plugin
    return networks, "bias_act/upfirdn2d plugins (JIT, CUDA) or their reference fallbacks"


def ada_ops_state() -> str:
    ba = sys.modules.get("torch_utils.ops.bias_act")
    ud = sys.modules.get("torch_utils.ops.upfirdn2d")
    state = {"bias_act": getattr(ba, "_plugin", None) is not None, "upfirdn2d": getattr(ud, "_plugin", None) is not None}
    return ", ".join(f"{k}: {'compiled CUDA plugin' if v else 'reference fallback'}" for k, v in state.items())


# ----------------------------------------------------------------------------------------------- weights

def our_generator(size: int, device: torch.device):
    from bench import common

    return common.ffhq_generator(size, device=device)


def rosinality_generator(model, ours, device: torch.device, cls=None):
    """Their Generator(size, 512, 8) with our weights (strict)."""
    cls = cls or model.Generator
    ref = cls(ours.size, 512, 8, channel_multiplier=2)
    ref.load_state_dict({k: v.detach().cpu() for k, v in ours.state_dict().items()}, strict=True)
    return ref.to(device).eval().requires_grad_(False)


def ada_generator(networks, ours, device: torch.device):
    """NVlabs' Generator (config-f: channel_base 32768, fp32, no clamp) with our weights under NVlabs' names."""
    g = networks.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=ours.size, img_channels=3,
                           mapping_kwargs={"num_layers": 8},
                           synthesis_kwargs={"channel_base": 32768, "channel_max": 512, "num_fp16_res": 0,
                                             "conv_clamp": None})
    src = {k: v.detach().cpu() for k, v in ours.state_dict().items()}
    dst = g.state_dict()
    new: dict[str, torch.Tensor] = {}

    def put(key: str, value: torch.Tensor) -> None:
        if key not in dst:
            raise KeyError(f"NVlabs generator has no {key}")
        new[key] = value.reshape(dst[key].shape).to(dst[key].dtype)

    for i in range(8):
        put(f"mapping.fc{i}.weight", src[f"style.{i + 1}.weight"])
        put(f"mapping.fc{i}.bias", src[f"style.{i + 1}.bias"])

    def layer(nv: str, ro: str, noise_index: int | None) -> None:
        put(f"{nv}.weight", src[f"{ro}.conv.weight"][0])
        put(f"{nv}.affine.weight", src[f"{ro}.conv.modulation.weight"])
        put(f"{nv}.affine.bias", src[f"{ro}.conv.modulation.bias"])
        if noise_index is not None:  # styled conv
            put(f"{nv}.bias", src[f"{ro}.activate.bias"])
            put(f"{nv}.noise_strength", src[f"{ro}.noise.weight"])
            put(f"{nv}.noise_const", src[f"noises.noise_{noise_index}"][0, 0])
        else:  # to-RGB
            put(f"{nv}.bias", src[f"{ro}.bias"])

    put("synthesis.b4.const", src["input.input"][0])
    layer("synthesis.b4.conv1", "conv1", 0)
    layer("synthesis.b4.torgb", "to_rgb1", None)
    for k in range(int(math.log2(ours.size)) - 2):
        r = 2 ** (k + 3)
        layer(f"synthesis.b{r}.conv0", f"convs.{2 * k}", 2 * k + 1)
        layer(f"synthesis.b{r}.conv1", f"convs.{2 * k + 1}", 2 * k + 2)
        layer(f"synthesis.b{r}.torgb", f"to_rgbs.{k}", None)
    missing = [k for k in dst if k not in new and not k.endswith("resample_filter") and k != "mapping.w_avg"]
    if missing:
        raise KeyError(f"unmapped NVlabs keys: {missing[:5]}")
    g.load_state_dict(new, strict=False)
    return g.to(device).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------- helpers

def _ctx(args):
    from bench import common

    dev = torch.device(args.device)
    from inversion.device import configure_backends

    configure_backends(dev)  # the flags app and CLI use, for the references as for ours
    return common.Context(dev, quick=args.quick, deadline_s=args.budget, warmup=args.warmup, repeats=args.repeats,
                          call_budget=args.call_budget, log=lambda m: print(m, flush=True))


def _load_target(path: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, float]:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return blob["ws"].to(device), blob["image"].to(device), float(blob["param_sum"])


def _param_sum(g) -> float:
    return float(sum(p.detach().double().sum() for p in g.parameters()))


def _rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref.double()).norm() / ref.double().norm())


def _evaluate(lpips, image: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    from inversion import metrics

    with torch.no_grad():
        raw = lpips.distance_to_features(_area256(image.float()), lpips.target_features(_area256(target)))
        return {"lpips": float(metrics.lpips_distance(lpips, image.float(), target)[0]),
                "lpips_raw": float(raw.mean()),  # unclamped, as the optimization losses see it
                "mse": float(metrics.mse(image.float(), target)[0])}


def _fmt_ms(s: float | None) -> str:
    return "n/a" if s is None else f"{s * 1e3:.1f} ms"


def _median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


# ----------------------------------------------------------------------------------------------- tasks

def task_build(args) -> dict:
    """Compile a repository's CUDA ops (run in the background while other parts run)."""
    dev = torch.device("cuda")
    t0 = time.perf_counter()
    if args.repo == "rosinality":
        _, label = import_rosinality(dev)
    elif args.repo == "e4e":
        _, _, label = import_e4e(dev)
    else:
        import_ada(dev)
        from torch_utils.ops import bias_act, upfirdn2d  # noqa: F401 - modules of the reference repo

        bias_act._init()
        upfirdn2d._init()
        label = ada_ops_state()
    return {"repo": args.repo, "build_s": time.perf_counter() - t0, "ops": label}


def _flush(args, records: list[dict], ops: str, ctx) -> None:
    """Write what is measured so far (a task killed at its time limit still leaves its records)."""
    _write_json(Path(args.out), {"ok": True, "partial": True, "records": records, "ops": ops, "errors": ctx.errors,
                                 "task": args.task})


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def _mem(fn, dev) -> dict:
    from bench import common

    with common.peak_memory(dev) as mem:
        fn()
    return mem


def _pair_records(ctx, part: str, impl: str, fn_ref, fn_ours, *, batch: int, **extra) -> list[dict]:
    """Time the reference and ours (fp32) interleaved in this process; one record each."""
    from bench import common

    t_ref, t_ours = common.time_pair(fn_ref, fn_ours, device=ctx.device, warmup=ctx.warmup, repeats=ctx.repeats,
                                     budget_s=2 * ctx.call_budget)
    out = []
    for name, t, fn in ((impl, t_ref, fn_ref), ("ours (paired)", t_ours, fn_ours)):
        out.append({"part": part, "impl": name, "variant": "fp32", "batch": batch, "median_s": t["median_s"],
                    "min_s": t["min_s"], "max_s": t["max_s"],
                    "per_image_s": t["median_s"] / batch, "img_per_s": batch / t["median_s"], "n": t["n"],
                    "times_s": t["times_s"], "paired_with": impl if name != impl else "ours (paired)",
                    **_mem(fn, ctx.device), **extra})
    ctx.log(f"  {part} b{batch}: {impl.split(' ')[0]} {t_ref['median_s'] * 1e3:.1f} ms, ours (same process, "
            f"interleaved) {t_ours['median_s'] * 1e3:.1f} ms")
    return out


def task_synthesis(args) -> dict:
    """rosinality Generator synthesis per batch and size (fp32, as the original code runs), interleaved with ours."""
    from bench import common

    ctx = _ctx(args)
    dev = ctx.device
    model, ops = import_rosinality(dev)
    records = []
    for size in args.sizes:
        ours = our_generator(size, dev)
        ref = rosinality_generator(model, ours, dev)
        main_size = size == args.size
        for batch in (args.batches if main_size else [1]):
            if ctx.out_of_time("all"):
                break
            gen = torch.Generator().manual_seed(5)
            with torch.no_grad():
                w = ours.mapping(torch.randn(batch, 512, generator=gen).to(dev))
                ws = w[:, None].expand(batch, ours.n_latent, 512).contiguous()
                err = _rel(ref([ws[:1]], input_is_latent=True, randomize_noise=False)[0], ours.synthesis(ws[:1]))

            def fn_ref():
                with torch.no_grad():
                    return ref([ws], input_is_latent=True, randomize_noise=False)[0]

            def fn_ours():
                with torch.no_grad():
                    return ours.synthesis(ws)
            try:
                records += _pair_records(ctx, "synthesis" if main_size else "size scaling", LABELS["rosinality"],
                                         fn_ref, fn_ours, batch=batch, size=size, rel_err_vs_ours=err)
                _flush(args, records, ops, ctx)
            except Exception as e:  # noqa: BLE001
                ctx.error(f"rosinality synthesis {size} b{batch}", e)
        del ref, ours
        common.free_cuda()
    return {"records": records, "ops": ops, "errors": ctx.errors}


def task_encoders(args) -> dict:
    """e4e / pSp encoders from the e4e repository + decoder, end to end (fp32), interleaved with ours."""
    from bench import common

    ctx = _ctx(args)
    dev = ctx.device
    enc_mod, gen_cls, label = import_e4e(dev)
    ours_g = our_generator(args.size, dev)
    if gen_cls is None:
        model, ops = import_rosinality(dev)
        label += f" ({ops})"
        dec = rosinality_generator(model, ours_g, dev)
    else:
        dec = rosinality_generator(None, ours_g, dev, cls=gen_cls)
    avg = ours_g.mean_latent(2000, generator=torch.Generator().manual_seed(7))
    opts = types.SimpleNamespace(stylegan_size=args.size)
    records = []
    for kind, cls_name in (("e4e", "Encoder4Editing"), ("psp", "GradualStyleEncoder")):
        ours_enc = common.encoder(kind, n_styles=ours_g.n_latent, device=dev)
        ref_enc = getattr(enc_mod, cls_name)(50, "ir_se", opts)
        ref_enc.load_state_dict({k: v.cpu() for k, v in ours_enc.state_dict().items()}, strict=True)
        ref_enc = ref_enc.to(dev).eval().requires_grad_(False)
        for batch in args.batches:
            if ctx.out_of_time("all"):
                break
            x = torch.rand(batch, 3, 256, 256, generator=torch.Generator().manual_seed(batch)).to(dev) * 2 - 1
            with torch.no_grad():
                err = _rel(ref_enc(x[:1]), ours_enc(x[:1]))

            def ref_e2e():
                with torch.no_grad():
                    codes = ref_enc(x) + avg.repeat(x.shape[0], 1, 1)
                    return dec([codes], input_is_latent=True, randomize_noise=False)[0]

            def ours_e2e():
                with torch.no_grad():
                    return ours_g.synthesis(ours_enc(x) + avg)

            def ref_enc_only():
                with torch.no_grad():
                    return ref_enc(x)

            def ours_enc_only():
                with torch.no_grad():
                    return ours_enc(x)
            pairs = [(f"{kind} encode+synthesize", ref_e2e, ours_e2e)]
            if batch == args.batches[0] or dev.type == "cuda":
                pairs.append((f"{kind} encoder only", ref_enc_only, ours_enc_only))
            for part, fr, fo in pairs:
                if ctx.out_of_time("all"):
                    break
                try:
                    records += _pair_records(ctx, part, LABELS["e4e"], fr, fo, batch=batch, size=args.size,
                                             rel_err_codes_vs_ours=err)
                    _flush(args, records, label, ctx)
                except Exception as e:  # noqa: BLE001
                    ctx.error(f"{kind} reference b{batch}", e)
        del ref_enc, ours_enc
        common.free_cuda()
    return {"records": records, "ops": label, "errors": ctx.errors}


def _noise_regularize(noises: list[torch.Tensor]) -> torch.Tensor:
    """The StyleGAN2 projector's noise autocorrelation penalty (same formula on both sides)."""
    loss = noises[0].new_zeros(())
    for noise in noises:
        size = noise.shape[-1]
        noise = noise.reshape(1, 1, size, size)
        while True:
            loss = loss + (noise * torch.roll(noise, 1, dims=3)).mean().pow(2) \
                + (noise * torch.roll(noise, 1, dims=2)).mean().pow(2)
            if size <= 8:
                break
            noise = noise.reshape(1, 1, size // 2, 2, size // 2, 2).mean([3, 5])
            size //= 2
    return loss


def _ramp_lr(t: float, lr: float) -> float:
    ramp = min(1.0, (1.0 - t) / 0.25)
    return lr * (0.5 - 0.5 * math.cos(ramp * math.pi)) * min(1.0, t / 0.05)


def _area256(x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] <= 256:
        return x
    f = x.shape[-1] // 256
    return x.reshape(x.shape[0], x.shape[1], 256, f, 256, f).mean([3, 5])


def task_projector(args) -> dict:
    """rosinality's projector recipe (W+, 1000 steps default, lr 0.1, latent noise, noise maps optimized,
    LPIPS on 256 px, noise regularization 1e5) around THEIR generator with OUR LPIPS-VGG."""
    from bench import common

    ctx = _ctx(args)
    dev = ctx.device
    model, ops = import_rosinality(dev)
    ours = our_generator(args.size, dev)
    ws_true, target, psum = _load_target(args.target, dev)
    if abs(_param_sum(ours) - psum) > 1e-3 * max(1.0, abs(psum)):
        raise RuntimeError("the regenerated weights differ from the main process's")
    g = rosinality_generator(model, ours, dev)
    del ours
    lpips, lpips_label = common.lpips_model("vgg", device=dev)
    target256 = _area256(target)
    feats = lpips.target_features(target256)
    gen = torch.Generator().manual_seed(0)
    common.sync(dev)
    t_start = time.perf_counter()
    with torch.no_grad():
        lat = g.style(torch.randn(10000, 512, generator=gen).to(dev))
        mean = lat.mean(0)
        std = ((lat - mean).pow(2).sum() / 10000) ** 0.5
    noises = [torch.randn(n.shape, generator=gen).to(dev) for n in g.make_noise()]  # the projector's .normal_()
    latent = mean.detach().clone()[None, None].repeat(1, g.n_latent, 1).requires_grad_(True)
    for n in noises:
        n.requires_grad_(True)
    opt = torch.optim.Adam([latent] + noises, lr=args.lr)
    steps = args.steps
    run_steps = steps if args.cut_steps is None else min(steps, args.cut_steps)
    stamps, curve = [], []
    with common.peak_memory(dev) as mem:
        for i in range(run_steps):
            t = i / steps
            opt.param_groups[0]["lr"] = _ramp_lr(t, args.lr)
            strength = float(std) * 0.05 * max(0.0, 1 - t / 0.75) ** 2
            latent_n = latent + torch.randn(latent.shape, generator=gen).to(dev) * strength
            img, _ = g([latent_n], input_is_latent=True, noise=noises)
            img = _area256(img)
            p_loss = lpips.distance_to_features(img, feats).sum()
            loss = p_loss + 1e5 * _noise_regularize(noises)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for n in noises:
                    n.sub_(n.mean()).div_(n.std())
            curve.append(float(p_loss))  # the projector prints p_loss every step (a sync, as here)
            stamps.append(time.perf_counter())
            if ctx.out_of_time("all"):
                break
    per_step = _median([b - a for a, b in zip(stamps[1:], stamps[2:])])
    with torch.no_grad():
        final = g([latent], input_is_latent=True, noise=noises)[0]
    out = {"impl": LABELS["rosinality"], "recipe": "rosinality projector.py (W+), loop re-written around their "
           "Generator with our LPIPS", "steps": steps, "steps_run": len(stamps), "per_step_s": per_step,
           "setup_s": (stamps[0] - t_start) - (per_step or 0) if stamps else None,
           "total_s": (stamps[-1] - t_start) if stamps else None, "lpips_label": lpips_label,
           "curve_every_10": curve[::10], "ops": ops, **mem}
    if len(stamps) == steps:
        out.update(_evaluate(lpips, final, target))
    else:
        out["extrapolated_total_s"] = None if per_step is None else (out["setup_s"] or 0.0) + steps * per_step
    ctx.log(f"  projector (reference): {_fmt_ms(per_step)}/step, {len(stamps)}/{steps} steps, "
            f"LPIPS {out.get('lpips', float('nan')):.4f}")
    return {"records": [out], "ops": ops, "errors": ctx.errors}


def task_pti(args) -> dict:
    """PTI (Roich et al.) recipe around NVlabs' generator (the one in PTI's ffhq.pkl): W pivot by PTI's projector
    (450 steps, lr 0.01 ramped, 600 w samples, noise maps optimized on a copy, LPIPS-VGG on 256 px), then 350 steps
    of Adam (lr 3e-4) on all generator weights with L2 + LPIPS-AlexNet at full resolution. Our LPIPS modules."""
    from bench import common

    ctx = _ctx(args)
    dev = ctx.device
    networks, _ = import_ada(dev)
    ours = our_generator(args.size, dev)
    ws_true, target, psum = _load_target(args.target, dev)
    if abs(_param_sum(ours) - psum) > 1e-3 * max(1.0, abs(psum)):
        raise RuntimeError("the regenerated weights differ from the main process's")
    G = ada_generator(networks, ours, dev)
    with torch.no_grad():
        check = _rel(G.synthesis(ws_true, noise_mode="const", force_fp32=True), ours.synthesis(ws_true))
    ctx.log(f"  NVlabs generator vs ours on the same weights: rel.err {check:.2e} ({ada_ops_state()})")
    records: list[dict] = []
    lp_vgg, vgg_label = common.lpips_model("vgg", device=dev)
    lp_alex, _ = common.lpips_model("alex", device=dev)
    common.sync(dev)
    t_start = time.perf_counter()
    # ---- pivot: PTI's w_projector recipe
    Gp = copy.deepcopy(G).eval().requires_grad_(False)
    import numpy as np

    z = torch.from_numpy(np.random.RandomState(123).randn(600, 512)).to(dev, torch.float32)
    with torch.no_grad():
        w_samples = Gp.mapping(z, None)[:, :1, :]
    w_avg = w_samples.mean(0, keepdim=True)
    w_std = float(((w_samples - w_avg).square().sum() / 600) ** 0.5)
    noise_bufs = [buf for name, buf in Gp.synthesis.named_buffers() if "noise_const" in name]
    feats = lp_vgg.target_features(F.interpolate(target, size=(256, 256), mode="area"))
    w_opt = w_avg.clone().requires_grad_(True)
    opt = torch.optim.Adam([w_opt] + noise_bufs, betas=(0.9, 0.999), lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    for buf in noise_bufs:
        buf[:] = torch.randn(buf.shape, generator=gen).to(dev)
        buf.requires_grad = True
    pivot_steps = args.pivot_steps if args.cut_steps is None else min(args.pivot_steps, args.cut_steps)
    p_stamps: list[float] = []
    with common.peak_memory(dev) as mem_pivot:
        for step in range(pivot_steps):
            t = step / args.pivot_steps
            scale = w_std * 0.05 * max(0.0, 1.0 - t / 0.75) ** 2
            for group in opt.param_groups:
                group["lr"] = _ramp_lr(t, 0.01)
            wsn = (w_opt + torch.randn(w_opt.shape, generator=gen).to(dev) * scale).repeat([1, G.num_ws, 1])
            synth = Gp.synthesis(wsn, noise_mode="const", force_fp32=True)
            dist = lp_vgg.distance_to_features(F.interpolate(synth, size=(256, 256), mode="area"), feats).sum()
            reg = 0.0
            for v in noise_bufs:
                noise = v[None, None]
                while True:
                    reg = reg + (noise * torch.roll(noise, 1, dims=3)).mean() ** 2
                    reg = reg + (noise * torch.roll(noise, 1, dims=2)).mean() ** 2
                    if noise.shape[2] <= 8:
                        break
                    noise = F.avg_pool2d(noise, kernel_size=2)
            loss = dist + reg * 1e5
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for buf in noise_bufs:
                    buf -= buf.mean()
                    buf *= buf.square().mean().rsqrt()
            loss.detach().item()  # tqdm/logprint in the original read the loss each step
            p_stamps.append(time.perf_counter())
            if ctx.out_of_time("all"):
                break
    del Gp, opt
    w_pivot = w_opt.detach().repeat([1, G.num_ws, 1])
    # ---- tuning: PTI's SingleIDCoach loop (locality regularization off, as its default)
    G.requires_grad_(True)
    opt = torch.optim.Adam(G.parameters(), lr=3e-4)
    tune_steps = args.tune_steps if args.cut_steps is None else min(args.tune_steps, args.cut_steps)
    t_stamps: list[float] = []
    with common.peak_memory(dev) as mem_tune:
        for _ in range(tune_steps):
            img = G.synthesis(w_pivot, noise_mode="const", force_fp32=True)
            l2 = F.mse_loss(img, target)
            lp = lp_alex(img, target).squeeze()
            loss = l2 + lp
            opt.zero_grad()
            loss.backward()
            opt.step()
            lp.detach().item()  # the original compares loss_lpips with its threshold every step (a sync)
            t_stamps.append(time.perf_counter())
            if ctx.out_of_time("all"):
                break
    G.requires_grad_(False)
    with torch.no_grad():
        final = G.synthesis(w_pivot, noise_mode="const", force_fp32=True)
    pivot_step = _median([b - a for a, b in zip(p_stamps[1:], p_stamps[2:])])
    tune_step = _median([b - a for a, b in zip(t_stamps[1:], t_stamps[2:])])
    out = {"impl": "danielroich/PTI recipe on " + LABELS["ada"], "pivot_steps": args.pivot_steps,
           "pivot_steps_run": len(p_stamps), "tune_steps": args.tune_steps, "tune_steps_run": len(t_stamps),
           "pivot_per_step_s": pivot_step, "tune_per_step_s": tune_step,
           "pivot_s": (p_stamps[-1] - t_start) if p_stamps else None,
           "tune_s": (t_stamps[-1] - p_stamps[-1]) if t_stamps and p_stamps else None,
           "total_s": (t_stamps[-1] - t_start) if t_stamps else None, "check_rel_err_vs_ours": check,
           "ops": ada_ops_state(), "lpips_label": vgg_label,
           "peak_mem_mb": max(mem_pivot.get("peak_mem_mb", 0), mem_tune.get("peak_mem_mb", 0)),
           "peak_mem_kind": mem_tune.get("peak_mem_kind"),
           "note": "LPIPS-threshold early stop (0.06) not applied: the stand-in LPIPS has another scale"}
    if len(p_stamps) == args.pivot_steps and len(t_stamps) == args.tune_steps:
        out.update(_evaluate(lp_vgg, final, target))
    else:
        setup = (p_stamps[0] - t_start - pivot_step) if p_stamps and pivot_step else 0.0
        out["extrapolated_total_s"] = (None if pivot_step is None or tune_step is None else
                                       setup + args.pivot_steps * pivot_step + args.tune_steps * tune_step)
    ctx.log(f"  PTI (reference): pivot {_fmt_ms(pivot_step)}/step ({len(p_stamps)} steps), tune "
            f"{_fmt_ms(tune_step)}/step ({len(t_stamps)} steps), total {out.get('total_s')}")
    records.append(dict(out, part="pti reference"))
    _flush(args, records, ada_ops_state(), ctx)
    del G, opt, lp_vgg, lp_alex
    common.free_cuda()
    G = ada_generator(networks, ours, dev)  # fresh copy: the tuned one no longer holds the seeded weights
    # synthesis speed of PTI's generator, interleaved with ours, for the record
    for batch in args.batches:
        if ctx.out_of_time("all"):
            break
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            ws = ours.mapping(torch.randn(batch, 512, generator=gen).to(dev))[:, None].expand(
                batch, ours.n_latent, 512).contiguous()

        def fn_ref():
            with torch.no_grad():
                return G.synthesis(ws, noise_mode="const", force_fp32=True)

        def fn_ours():
            with torch.no_grad():
                return ours.synthesis(ws)
        try:
            records += _pair_records(ctx, "synthesis", LABELS["ada"], fn_ref, fn_ours, batch=batch, size=args.size,
                                     rel_err_vs_ours=check)
        except Exception as e:  # noqa: BLE001
            ctx.error(f"NVlabs synthesis b{batch}", e)

    return {"records": records, "ops": ada_ops_state(), "errors": ctx.errors}


TASKS = {"build": task_build, "synthesis": task_synthesis, "encoders": task_encoders,
         "projector": task_projector, "pti": task_pti}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task", choices=sorted(TASKS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--repo", choices=sorted(REPOS), default="rosinality")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--budget", type=float, default=300.0, help="seconds for the whole task")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--call-budget", type=float, default=30.0)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--target", help="target .pt written by bench.run (ws, image, param_sum)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--pivot-steps", type=int, default=450)
    p.add_argument("--tune-steps", type=int, default=350)
    p.add_argument("--cut-steps", type=int, default=None, help="run only this many steps per phase, extrapolate")
    args = p.parse_args(argv)
    if args.task != "build":
        sys.path.insert(0, str(ROOT))
    t0 = time.perf_counter()
    try:
        result = TASKS[args.task](args)
        result["ok"] = True
    except Exception as err:  # noqa: BLE001 - the parent reads the JSON either way
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(err).__name__}: {err}"[:600]}
    result.update({"task": args.task, "seconds": time.perf_counter() - t0, "device": args.device})
    _write_json(Path(args.out), result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
