"""One command for the whole benchmark: speed (ours and the original code), scaling, and quality.

    python -m bench.run --device cpu  --out bench/results/cpu          # this machine
    python -m bench.run --device cuda --out bench/results/h100         # a GPU (see bench/gpu_all.sh)
    python -m bench.run --device cpu --quick --out /tmp/bench_smoke     # a fast smoke run

Writes ``<out>.json`` (every number), ``<out>.md`` (tables), ``<out>.png`` (plots) and ``<out>_logs/``; the JSON/MD
are rewritten after every part, so a run cut short keeps what it measured.
Speed runs on seeded random weights of the FFHQ 1024 architecture (config-f); quality on the built-in model set.
The original implementations run in subprocesses from ``.bench_refs/`` (see bench/README.md) when present.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch

from bench import appruns, common, quality, reference, report, speed

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("quality", "synthesis", "encoders", "optimization", "pti", "full", "scaling", "references")


def plan(device: torch.device, quick: bool) -> dict[str, Any]:
    """What to measure (and for how long) on this kind of device."""
    if device.type == "cuda":
        p = {"synth_batches": (1, 8, 32), "enc_batches": (1, 8, 32), "opt_steps": 20, "pti_steps": 15,
             "sizes": (256, 512, 1024), "size_batches": (1, 8), "steps_list": (50, 100, 200),
             "app_jobs": "all", "matched": True, "ref_cut": None, "q_samples": 2,
             "projector_steps": 300, "pti_matched_steps": (150, 150),  # both sides, same steps; fits the budget
             "q_presets": ("fast", "balanced", "quality"), "warmup": 3, "repeats": 10, "call_budget": 8.0,
             "budgets": {"quality": 40, "wait_builds": 60, "synthesis": 40, "encoders": 35, "optimization": 30,
                         "pti": 25, "full": 45, "scaling": 20, "ref_synthesis": 45, "ref_encoders": 50,
                         "matched_projector": 70, "matched_pti": 80}}
        if quick:
            p.update({"synth_batches": (1, 8), "enc_batches": (1, 8), "opt_steps": 5, "pti_steps": 3,
                      "steps_list": (20, 40), "q_samples": 1, "q_presets": ("fast",), "repeats": 5,
                      "matched": False, "ref_cut": 5, "app_jobs": "encoders"})
        return p
    p = {"synth_batches": (1,), "enc_batches": (1,), "opt_steps": 1, "pti_steps": 1, "sizes": (256, 512, 1024),
         "size_batches": (1,), "steps_list": (), "app_jobs": "encoders", "matched": False, "ref_cut": 3,
         "q_samples": 1, "q_presets": ("fast",), "warmup": 1, "repeats": 3, "call_budget": 40.0,
         "budgets": {"quality": 300, "wait_builds": 0, "synthesis": 200, "encoders": 300, "optimization": 300,
                     "pti": 300, "full": 150, "scaling": 120, "ref_synthesis": 300, "ref_encoders": 450,
                     "matched_projector": 300, "matched_pti": 400}}
    if quick:
        p.update({"synth_batches": (1,), "enc_batches": (1,), "opt_steps": 1, "pti_steps": 1, "sizes": (256,),
                  "q_presets": ("fast",), "repeats": 1, "warmup": 1, "ref_cut": 2,
                  "budgets": {k: min(v, 120) for k, v in p["budgets"].items()}})
    return p


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.plan = plan(self.device, args.quick)
        if args.repeats:
            self.plan["repeats"] = args.repeats
        stem = Path(args.out)  # bench/results/cpu -> bench/results/cpu.json, .md, .png and cpu_logs/
        self.out, self.name = stem.parent, stem.name
        self.logs = self.out / f"{self.name}_logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix="bench_run_"))
        self.ctx = common.Context(self.device, quick=args.quick, deadline_s=args.budget, warmup=self.plan["warmup"],
                                  repeats=self.plan["repeats"], call_budget=self.plan["call_budget"],
                                  log=self._print)
        self.started = time.time()
        self.builds: dict[str, subprocess.Popen] = {}
        self.res: dict[str, Any] = {"meta": {}, "records": [], "matched": [], "notes": [], "errors": self.ctx.errors,
                                    "builds": {}, "reference_status": {}, "quality": {}}
        self.skip = set(args.skip or [])
        from inversion.methods import use_bf16

        self.autocast = use_bf16(self.device)  # as inversion.methods runs optimization/PTI on this machine
        self.app_variant = "bf16 autocast" if self.autocast else "fp32"

    def _print(self, msg: str) -> None:
        print(msg, flush=True)
        with open(self.logs / "run.log", "a") as f:
            f.write(msg + "\n")

    def save(self) -> None:
        self.res["meta"]["wall_s"] = round(time.time() - self.started, 1)
        self.res["meta"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        try:
            info = report.write(self.res, self.out, self.name)
            self.res["meta"]["plot_backend"] = info["plot"]
        except Exception as err:  # noqa: BLE001 - never lose the numbers over a report bug
            self.ctx.error("report", err)
            (self.out / f"{self.name}.json").write_text(json.dumps(self.res, indent=1, default=str))

    def want(self, part: str) -> bool:
        return part not in self.skip and (self.args.only is None or part in self.args.only)

    # ------------------------------------------------------------------------------------ set-up
    def setup(self) -> None:
        from inversion.device import configure_backends

        configure_backends(self.device)  # the flags app and CLI use (cuDNN benchmark off, workspace cap, TF32)
        if self.device.type == "cpu" and self.args.threads:
            torch.set_num_threads(self.args.threads)
        self.res["meta"].update({
            "command": " ".join([Path(sys.executable).name, "-m", "bench.run"] + sys.argv[1:]),
            "started": dt.datetime.now().isoformat(timespec="seconds"), "device": self.args.device,
            "quick": self.args.quick, "size": self.args.size, "plan": {k: v for k, v in self.plan.items()},
            "machine": common.machine_info(self.device)})
        self.ctx.log(f"machine: {json.dumps(self.res['meta']['machine'])}")
        refs = reference.available()
        self.res["reference_status"]["repositories"] = {k: ("present" if v else "ABSENT (.bench_refs)")
                                                       for k, v in refs.items()}
        if self.device.type == "cuda" and self.want("references"):
            env = dict(os.environ, MAX_JOBS=os.environ.get("MAX_JOBS", "4"))
            for repo, ok in refs.items():
                if not ok:
                    continue
                log = open(self.logs / f"build_{repo}.log", "w")
                self.builds[repo] = subprocess.Popen(
                    [sys.executable, "-m", "bench.reference", "build", "--repo", repo, "--device", "cuda",
                     "--out", str(self.tmp / f"build_{repo}.json")], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                    env=env)
            self.ctx.log(f"building reference CUDA ops in the background: {sorted(self.builds)}")

    def builds_running(self) -> list[str]:
        return [k for k, p in self.builds.items() if p.poll() is None]

    def wait_builds(self, seconds: float) -> None:
        end = time.monotonic() + max(0.0, seconds)
        while self.builds_running() and time.monotonic() < end and self.ctx.remaining() > 60:
            time.sleep(1.0)
        for repo, proc in self.builds.items():
            path = self.tmp / f"build_{repo}.json"
            if proc.poll() is None:
                self.res["builds"][repo] = "still compiling (its task will wait for the build lock or fall back)"
            elif path.is_file():
                data = json.loads(path.read_text())
                self.res["builds"][repo] = (f"ok in {data.get('build_s', 0):.0f} s: {data.get('ops')}" if data.get("ok")
                                            else f"FAILED: {data.get('error')}")
            else:
                self.res["builds"][repo] = f"exited {proc.returncode} without a result (see logs/build_{repo}.log)"
        failed = [repo for repo, text in self.res["builds"].items()
                  if text.startswith(("FAILED", "exited")) or "FAILED" in text or "reference fallback" in text]
        if failed:
            os.environ["BENCH_NO_JIT"] = ",".join(failed)  # the reference tasks go straight to their fallbacks
        self.ctx.log(f"builds: {self.res['builds']}")

    # ------------------------------------------------------------------------------------ parts
    def part(self, name: str, budget_key: str, fn) -> Any:
        budget = self.plan["budgets"].get(budget_key, 60) * self.args.budget_scale
        if self.ctx.remaining() < 5:
            self.res["notes"].append(f"{name}: skipped, the run's time budget is spent")
            return None
        self.ctx.begin(name, budget)
        running = self.builds_running()
        if running:
            self.res["notes"].append(f"{name} ran while reference CUDA ops were still compiling ({', '.join(running)})")
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - one part failing never stops the run
            self.ctx.error(name, err)
            return None
        finally:
            self.save()

    def run(self) -> None:
        self.setup()
        self.save()
        dev = self.device
        lp, lp_label = common.lpips_model("vgg", device=dev)
        self.res["meta"]["lpips_label"] = lp_label
        P = self.plan
        if not self.want("quality"):
            self.res["quality"] = {"skipped_reason": "not requested (--skip / --only)"}
        else:
            def q():
                self.res["quality"] = quality.run(self.ctx, samples=P["q_samples"], presets=P["q_presets"],
                                                  lpips_model=lp, lpips_label=lp_label)
            self.part("quality", "quality", q)
        size = self.args.size
        g = common.ffhq_generator(size, device=dev)
        ws_true, target = common.known_target(g)
        target_file = self.tmp / "target.pt"
        torch.save({"ws": ws_true.cpu(), "image": target.cpu(),
                    "param_sum": float(sum(p.detach().double().sum() for p in g.parameters()))}, target_file)
        add = self.res["records"].extend
        if self.want("synthesis"):
            self.part("synthesis", "synthesis",
                      lambda: add(speed.synthesis(self.ctx, g, batches=P["synth_batches"], size=size)))
        if self.want("encoders"):
            self.part("encoders", "encoders", lambda: add(speed.encoders(self.ctx, g, batches=P["enc_batches"])))
        if self.want("optimization"):
            self.part("optimization", "optimization",
                      lambda: add(speed.optimization(self.ctx, g, lp, target, timed_steps=P["opt_steps"])))
        if self.want("pti"):
            self.part("pti", "pti", lambda: add(speed.pti_steps(self.ctx, g, lp, target, timed_steps=P["pti_steps"])))
        # the references after our parts: gives their CUDA builds time to finish in the background
        if self.builds:
            self.wait_builds(P["budgets"]["wait_builds"])
        if self.want("references"):
            self.part("reference synthesis", "ref_synthesis", lambda: self.ref(
                "synthesis", "ref_synthesis", ["--size", str(size), "--sizes", *map(str, sorted(set(P["sizes"]) | {size})),
                                               "--batches", *map(str, P["synth_batches"])]))
            self.part("reference encoders", "ref_encoders", lambda: self.ref(
                "encoders", "ref_encoders", ["--size", str(size), "--batches", *map(str, P["enc_batches"])]))
        if self.want("references") and (P["matched"] or self.args.matched_steps or P["ref_cut"]):
            self.part("matched W+ optimization", "matched_projector", lambda: self.matched_projector(g, lp, target,
                                                                                                   target_file))
            self.part("matched PTI", "matched_pti", lambda: self.matched_pti(g, lp, target, target_file))
        self.update_estimates()
        if self.want("full") and P["app_jobs"]:
            self.part("app runs", "full", lambda: self.app_runs(g, lp, target))
        if self.want("scaling"):
            def scaling():
                main = [dict(r, part="size scaling") for r in self.res["records"]
                        if r.get("part") == "synthesis" and r["batch"] in P["size_batches"]
                        and r["variant"] in ("fp32", "bf16")
                        and (r["impl"] == "ours" or r["batch"] == 1)]
                add(main)
                add(speed.size_scaling(self.ctx, sizes=[s for s in P["sizes"] if s != size],
                                       batches=P["size_batches"]))
                if P["steps_list"]:
                    add(speed.steps_scaling(self.ctx, g, lp, target, steps_list=P["steps_list"]))
            self.part("scaling", "scaling", scaling)
        for proc in self.builds.values():
            if proc.poll() is None:
                proc.kill()
        self.update_estimates()
        self.save()
        try:
            print("\n" + report.compact(self.res), flush=True)
        except Exception as err:  # noqa: BLE001
            print(f"compact table failed: {err}", flush=True)
        print(f"\nwrote {self.out / (self.name + '.json')}, .md, .png", flush=True)

    # ------------------------------------------------------------------------------------ references
    def ref(self, task: str, budget_key: str, extra: list[str]) -> Optional[dict]:
        """Run ``bench.reference TASK`` in a subprocess with a time limit; merge its records."""
        if not reference.available()["rosinality" if task in ("synthesis", "projector") else
                                     "e4e" if task == "encoders" else "ada"]:
            self.res["notes"].append(f"reference {task}: repository absent in .bench_refs (skipped)")
            return None
        budget = min(self.plan["budgets"][budget_key] * self.args.budget_scale, max(10.0, self.ctx.remaining() - 5))
        out = self.tmp / f"ref_{task}.json"
        cmd = [sys.executable, "-m", "bench.reference", task, "--device", self.args.device, "--out", str(out),
               "--budget", str(max(5.0, budget - 20)), "--warmup", str(self.plan["warmup"]),
               "--repeats", str(min(5, self.plan["repeats"])), "--call-budget", str(self.plan["call_budget"])] + extra
        if self.args.quick:
            cmd.append("--quick")
        self.ctx.log("  $ " + " ".join(cmd[1:]))
        with open(self.logs / f"ref_{task}.log", "w") as log:
            try:
                subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=budget + 30)
            except subprocess.TimeoutExpired:
                self.ctx.errors.append(f"reference {task}: killed after {budget + 30:.0f} s"
                                       + (" (its partial records are kept)" if out.is_file() else ""))
        if not out.is_file():
            self.ctx.errors.append(f"reference {task}: no result (see logs/ref_{task}.log)")
            return None
        data = json.loads(out.read_text())
        if not data.get("ok"):
            self.ctx.errors.append(f"reference {task}: {data.get('error')}")
            return data
        self.res["reference_status"][task] = f"ran with {data.get('ops')} in {data.get('seconds', 0):.0f} s"
        self.ctx.errors.extend(f"reference {task}: {e}" for e in data.get("errors", []))
        for r in data.get("records", []):
            if "part" in r:
                self.res["records"].append(r)
        self.ctx.log(f"  reference {task}: {len(data.get('records', []))} records ({data.get('ops')})")
        return data

    def _ours_timed(self, call, *, limit_s: float) -> tuple[Any, speed.StepClock, float, bool]:
        """Run ``call(clock)`` (cancelled after ``limit_s``): result, clock, seconds, whether it was cut."""
        from inversion.result import Cancelled

        clock = speed.StepClock(cancel_after_s=limit_s)
        common.sync(self.device)
        t0 = time.perf_counter()
        result, cut = None, False
        with common.peak_memory(self.device) as mem:
            try:
                result = call(clock)
            except Cancelled:
                cut = True
            common.sync(self.device)
        clock.mem = mem  # type: ignore[attr-defined]
        return result, clock, time.perf_counter() - t0, cut

    def _fp32_estimate(self, part: str, steps: Optional[int]) -> Optional[float]:
        """Our fp32 time for a matched run, extrapolated from the per-step records (W+ / PTI quality steps)."""
        from inversion.pti import PRESETS

        for r in self.res["records"]:
            if r.get("impl") != "ours" or r.get("variant") != "fp32":
                continue
            if part == "optimization" and r.get("part") == "opt step" and r.get("method") == "w+":
                return (r["setup_s"] or 0.0) + (steps or 1000) * r["per_step_s"]
            if part == "pti" and r.get("part") == "pti step":
                q = PRESETS["quality"]
                return r["setup1_s"] + r["setup2_s"] + q.pivot_steps * r["pivot_per_step_s"] + \
                    q.tune_steps * r["tune_per_step_s"]
        return None

    def _part_left(self, part: str) -> float:
        return max(5.0, self.ctx.part_deadline.get(part, self.ctx.deadline) - time.monotonic())

    def matched_projector(self, g, lp, target, target_file: Path) -> None:
        """W+ optimization: rosinality's projector recipe on its generator vs our optimize_latent, same target,
        same number of steps; compares time and final LPIPS / MSE (and when ours reaches the reference's LPIPS)."""
        from inversion.optimize import optimize_latent

        steps = self.args.matched_steps or self.plan.get("projector_steps", 1000)
        cut = None if self.args.matched_steps else self.plan["ref_cut"]
        extra = ["--target", str(target_file), "--steps", str(steps), "--size", str(g.size)] + (
            ["--cut-steps", str(cut)] if cut else [])
        data = self.ref("projector", "matched_projector", extra)
        if not data or not data.get("ok"):
            return
        ref = data["records"][0]
        ref_complete = ref.get("steps_run") == steps
        n = steps if cut is None else cut + 2

        def call(c):
            c.cancel_after_steps = None if cut is None else n
            return optimize_latent(g, target, lpips=lp, space="w+", steps=steps, early_stop=False, callback=c,
                                   cancel=c.cancel, autocast=self.autocast)
        res, clock, secs, was_cut = self._ours_timed(call, limit_s=self._part_left("matched W+ optimization"))
        per_step = clock.per_step()
        entry = {"kind": "projector", "what": f"W+ optimization, {steps} steps" + (
                     " (projector: 1000)" if steps != 1000 else ""), "reference": ref["impl"],
                 "ref_per_step_s": ref.get("per_step_s"), "ref_setup_s": ref.get("setup_s"),
                 "ours_per_step_s": per_step, "ref_peak_mem_mb": ref.get("peak_mem_mb"),
                 "ours_peak_mem_mb": clock.mem.get("peak_mem_mb"),
                 "note": "reference: rosinality projector recipe (LPIPS + noise regularization, noise maps optimized, "
                 "latent noise); ours: optimize_latent W+ (MSE + LPIPS, stored noise); same LPIPS network, same "
                 "target (rendered with fresh noise maps)"}
        if ref_complete:
            entry.update({"ref_s": ref.get("total_s"), "ref_lpips": ref.get("lpips"), "ref_mse": ref.get("mse")})
        else:
            entry["ref_s"] = ref.get("extrapolated_total_s")
            entry["note"] += f"; reference EXTRAPOLATED from {ref.get('steps_run')} timed steps"
        if res is not None and not was_cut:
            entry.update({"ours_s": secs, "ours_best_s": secs, "ours_best_variant": self.app_variant,
                          **_ours_eval(lp, res.image, target)})
            raw_ref = ref.get("lpips_raw")
            hit = None if raw_ref is None or not ref_complete else next(
                (i for i, m in enumerate(clock.metrics) if m.get("lpips", 1e9) <= raw_ref), None)
            if hit is not None:
                entry.update({"ours_steps_to_ref_lpips": hit + 1, "ours_best_s": clock.stamps[hit] - clock.start,
                              "ours_best_variant": f"{self.app_variant}, at the reference's final LPIPS "
                                                   f"(step {hit + 1} of {steps})"})
            elif ref_complete:
                entry["note"] += "; ours did not reach the reference's final LPIPS within the steps"
        elif per_step:
            entry["ours_best_s"] = (clock.setup_s() or 0) + steps * per_step
            entry["ours_best_variant"] = self.app_variant + ", extrapolated"
            entry["note"] += f"; ours EXTRAPOLATED from {len(clock.stamps)} steps"
        entry["ours_fp32_s"] = self._fp32_estimate("optimization", steps) if self.autocast else entry.get(
            "ours_s", entry.get("ours_best_s"))
        if self.autocast:
            entry["note"] += "; 'ours fp32' = fp32 per-step time x steps (the app runs bf16 autocast here)"
        if not ref_complete or res is None or was_cut:
            entry["note"] += " (no quality comparison)"
            entry.pop("ref_lpips", None)
        self.res["matched"].append(entry)
        self.ctx.log(f"  matched W+: reference {entry.get('ref_s')} s vs ours {entry.get('ours_best_s')} s; LPIPS "
                     f"{entry.get('ref_lpips')} vs {entry.get('ours_lpips')}")

    def matched_pti(self, g, lp, target, target_file: Path) -> None:
        """PTI: the paper's recipe on NVlabs' generator vs our pivotal_tuning (quality preset), same target."""
        from inversion.pti import PRESETS, pivotal_tuning

        q = PRESETS["quality"]
        pivot_steps, tune_steps = self.plan.get("pti_matched_steps", (q.pivot_steps, q.tune_steps))
        if self.args.matched_steps:
            pivot_steps = tune_steps = self.args.matched_steps
        cut = None if self.args.matched_steps else self.plan["ref_cut"]
        extra = ["--target", str(target_file), "--pivot-steps", str(pivot_steps), "--tune-steps", str(tune_steps),
                 "--size", str(g.size), "--batches", *map(str, self.plan["synth_batches"])] + (
            ["--cut-steps", str(cut)] if cut else [])
        data = self.ref("pti", "matched_pti", extra)
        if not data or not data.get("ok"):
            return
        ref = next(r for r in data["records"] if r.get("part") == "pti reference")
        ref_complete = ref.get("pivot_steps_run") == pivot_steps and ref.get("tune_steps_run") == tune_steps
        entry = {"kind": "pti", "what": f"PTI {pivot_steps}+{tune_steps} steps" + (
                     " (paper: 450+350)" if (pivot_steps, tune_steps) != (450, 350) else ""), "reference": ref["impl"],
                 "ref_peak_mem_mb": ref.get("peak_mem_mb"),
                 "note": "reference: PTI recipe (LPIPS-VGG pivot on 256 px with noise optimization; tuning with "
                 "L2 + LPIPS-Alex at full size); ours: pivotal_tuning (LPIPS-VGG at 256 px); no LPIPS-threshold "
                 "stop on either side"}
        if ref_complete:
            entry.update({"ref_s": ref.get("total_s"), "ref_lpips": ref.get("lpips"), "ref_mse": ref.get("mse")})
        else:
            entry["ref_s"] = ref.get("extrapolated_total_s")
            entry["note"] += " ; reference EXTRAPOLATED from its timed steps (no quality comparison)"
        if cut is None:
            res, clock, secs, was_cut = self._ours_timed(lambda c: pivotal_tuning(
                g, target, lpips=lp, preset="quality", pivot_steps=pivot_steps, tune_steps=tune_steps,
                lpips_threshold=0.0, callback=c, cancel=c.cancel, autocast=self.autocast),
                limit_s=self._part_left("matched PTI"))
            entry["ours_peak_mem_mb"] = clock.mem.get("peak_mem_mb")
            if res is not None and not was_cut:
                entry.update({"ours_s": secs, "ours_best_s": secs, "ours_best_variant": self.app_variant,
                              **_ours_eval(lp, res.image, target)})
            else:
                entry["note"] += f"; ours CUT at the time budget after {len(clock.stamps)} steps ({secs:.1f} s)"
        else:
            step = next((r for r in self.res["records"] if r.get("part") == "pti step"
                         and r.get("variant") == self.app_variant), None)
            entry["ours_best_s"] = step and (step["setup1_s"] + step["setup2_s"] + pivot_steps *
                                             step["pivot_per_step_s"] + tune_steps * step["tune_per_step_s"])
            entry["ours_best_variant"] = self.app_variant + ", extrapolated"
            entry["note"] += "; ours EXTRAPOLATED from its timed steps"
        if "ours_lpips" not in entry:
            entry.pop("ref_lpips", None)
        entry["ours_fp32_s"] = (self._fp32_estimate("pti", None) if self.autocast or cut is not None
                                else entry.get("ours_s"))
        if self.autocast:
            entry["note"] += "; 'ours fp32' = fp32 per-step times x the quality preset's steps"
        self.res["matched"].append(entry)
        self.ctx.log(f"  matched PTI: reference {entry.get('ref_s')} s vs ours {entry.get('ours_best_s')} s; LPIPS "
                     f"{entry.get('ref_lpips')} vs {entry.get('ours_lpips')}")

    def update_estimates(self) -> None:
        """(Re)compute the per-preset extrapolations from the per-step records."""
        recs = [r for r in self.res["records"] if r.get("part") != "app estimate"]
        try:
            recs += appruns.estimates(recs, self.device)
        except Exception as err:  # noqa: BLE001
            self.ctx.error("app estimates", err)
        self.res["records"][:] = recs  # in place: parts hold a bound .extend of this list

    def app_runs(self, g, lp, target) -> None:
        """The app's own ``methods.invert`` per method and preset (random weights), cheapest first."""
        models = appruns.random_ffhq_models(g, lp, self.tmp, self.device)
        jobs = [j for j in appruns.app_jobs() if j[0] != "psp"]  # pSp = encode + synthesize, timed above
        if self.plan["app_jobs"] == "encoders":
            jobs = [j for j in jobs if j[0] == "e4e"]
        appruns.app_run(self.ctx, models, "e4e", "default", target, limit_s=30, lpips_model=lp)  # warm-up, loads
        for method, preset in jobs:
            left = self.ctx.part_deadline["app runs"] - time.monotonic()
            if left < 2:
                self.res["notes"].append(f"app run {method}/{preset}: skipped (time budget); see the estimate")
                continue
            rec = appruns.app_run(self.ctx, models, method, preset, target, limit_s=left, lpips_model=lp)
            if rec:
                self.res["records"].append(rec)
        for path in self.tmp.glob("*.pt"):
            path.unlink()


def _ours_eval(lp, image: torch.Tensor, target: torch.Tensor, prefix: str = "ours_") -> dict[str, float]:
    from inversion import metrics

    with torch.no_grad():
        return {f"{prefix}lpips": float(metrics.lpips_distance(lp, image.float(), target)[0]),
                f"{prefix}mse": float(metrics.mse(image.float(), target)[0])}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Benchmark: speed, scaling and quality of every inversion method, "
                                "ours and the original code side by side.")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", default=None, help="output path stem: writes STEM.json, STEM.md, STEM.png and "
                   "STEM_logs/ (default bench/results/<device>)")
    p.add_argument("--quick", action="store_true", help="fewer sizes, steps and repeats (a smoke run)")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default: 490 on CUDA, "
                   "3600 on CPU); parts stop early to stay inside it")
    p.add_argument("--budget-scale", type=float, default=1.0, help="multiply every part's budget")
    p.add_argument("--skip", nargs="*", choices=PARTS, help="parts to leave out")
    p.add_argument("--only", nargs="*", choices=PARTS, help="run only these parts")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--size", type=int, default=1024, help="generator size for the speed part (FFHQ: 1024; smaller "
                   "only for smoke runs)")
    p.add_argument("--matched-steps", type=int, default=None, help="run the matched-quality comparisons (W+ "
                   "optimization, PTI) with this many steps per stage on any device (default: GPU only, the papers' "
                   "step counts)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    args.out = args.out or str(ROOT / "bench" / "results" / args.device)
    args.budget = args.budget or (490.0 if args.device == "cuda" else 3600.0)
    Runner(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
