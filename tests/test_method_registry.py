"""A method is one registered object: a dummy method registered in a COPY of the registry shows up in the
library's, the session's, the CLI's and the app's lists (and runs) without any other file changing; the shipped
registry is left alone. Also: one e4e pass per photo and run, the MSE-only note, run times from measurements."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from inversion import cli  # noqa: E402
from inversion import methods as M  # noqa: E402
from inversion import session as S  # noqa: E402
from inversion.checkpoints import CheckpointMissingError  # noqa: E402
from inversion.methods import METHODS, Method, RunRequest, StartCache, invert  # noqa: E402
from inversion.result import Inversion  # noqa: E402
from tiny_models import SIZE, TinyModelSet, tiny_model_set  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HOPPER = ROOT / "examples" / "grace_hopper.jpg"
STEPS = {"fast": 1, "slow": 2}


def _mean_code(request: RunRequest) -> Inversion:
    """The dummy method: the generator's average code, drawn; reports one progress step per preset step."""
    g = request.models.generator()
    w = request.models.latent_avg().reshape(1, 1, -1).expand(1, g.n_latent, -1).clone()
    for step in range(STEPS[request.preset]):
        if request.callback is not None:
            request.callback(step + 1, STEPS[request.preset], {"loss": 0.0})
    return Inversion("mean", w_plus=w, image=g.synthesis(w), info={"recipe": {"steps": STEPS[request.preset]}})


DUMMY = Method("mean", "Mean code", "Draws the average face: a baseline for the others.", _mean_code,
               needs=("generator",), presets=("fast", "slow"), order=35, how="the average code, no fitting")


@pytest.fixture()
def registry():
    reg = METHODS.copy()
    reg.register(DUMMY)
    return reg


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    torch.manual_seed(3)
    return torch.rand(1, 3, SIZE, SIZE) * 2 - 1


def test_the_copy_takes_the_method_and_the_shipped_registry_does_not(registry):
    assert registry.order == ("e4e", "psp", "hyperstyle", "w", "mean", "w+", "pti")
    assert [m.key for m in registry.with_presets()] == ["w", "mean", "w+", "pti"]
    assert METHODS.order == ("e4e", "psp", "hyperstyle", "w", "w+", "pti") and "mean" not in METHODS
    with pytest.raises(ValueError, match="already registered"):
        registry.register(DUMMY)


def test_session_lists_and_runs_the_registered_method(registry, image):
    models = tiny_model_set()
    present = S.file_present_from({})
    status = S.method_status(models, present, registry)
    assert list(status) == list(registry.order) and status["mean"] == (True, "")
    assert S.order_methods(["pti", "mean", "e4e"], registry) == ["e4e", "mean", "pti"]
    assert "Mean code" in S.status_markdown(models, present, None, registry)
    with pytest.raises(S.SessionError, match="Unknown method"):
        S.order_methods(["mean"])  # the shipped registry does not know it

    seen = []
    items = list(S.run_inversions(models, image, ["mean", "e4e"], presets={"mean": "slow"},
                                  on_progress=lambda m, step, total, _: seen.append((m, step, total)),
                                  registry=registry))
    assert [i.method for i in items] == ["e4e", "mean"] and seen == [("mean", 1, 2), ("mean", 2, 2)]
    mean = items[1]
    assert mean.label == "Mean code" and mean.preset == "slow"
    expected = models.latent_avg().reshape(1, 1, -1).expand_as(mean.inversion.w_plus)
    assert torch.equal(mean.inversion.w_plus, expected)
    assert mean.inversion.info["recipe"] == {"method": "mean", "preset": "slow", "seed": 0,
                                             "autocast": mean.inversion.info["recipe"]["autocast"], "steps": 2}
    assert mean.metrics["mse"] == pytest.approx(float(((mean.inversion.image - image) ** 2).mean()), rel=1e-5)
    state = S.VisitorState()
    for item in reversed(items):
        state = S.add_result(state, item, registry)
    assert list(state.results) == ["e4e", "mean"]  # run order, not arrival order


def test_cli_lists_and_runs_the_registered_method(registry, tmp_path):
    parser = cli.build_parser(registry)
    assert parser.parse_args(["x", "-o", "y", "--methods", "mean,e4e"]).methods == ["e4e", "mean"]
    assert "mean" in parser.epilog and "Mean code" in parser.epilog
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main([str(HOPPER), "--out", str(tmp_path), "--methods", "mean", "--preset", "mean=slow", "-q"],
                  model_sets=lambda device, locate: {"tiny": tiny_model_set()}, stdout=out, stderr=err,
                  methods=registry)
    assert rc == 0, err.getvalue()
    record = json.loads((tmp_path / "grace_hopper" / "metrics.json").read_text())
    assert record["methods"]["mean"]["preset"] == "slow" and record["methods"]["mean"]["recipe"]["steps"] == 2
    assert (tmp_path / "grace_hopper" / "mean.png").is_file()
    with open(tmp_path / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["method"], r["label"], r["preset"]) for r in rows] == [("mean", "Mean code", "slow")]
    # the shipped registry refuses the name
    rc = cli.main([str(HOPPER), "--out", str(tmp_path / "x"), "--methods", "mean"],
                  model_sets=lambda device, locate: {"tiny": tiny_model_set()}, stdout=io.StringIO(),
                  stderr=(err := io.StringIO()))
    assert rc == 2 and "Unknown method(s) 'mean'" in err.getvalue()


def _component(config: dict, elem_id: str) -> dict:
    found = [c["props"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id]
    assert len(found) == 1, elem_id
    return found[0]


def _invert_parameters(demo) -> list[str]:
    return [p["parameter_name"] for p in demo.get_api_info()["named_endpoints"]["/invert"]["parameters"]]


def test_app_lists_the_registered_method(registry):
    import app

    demo = app.build_demo({"tiny": tiny_model_set()}, methods=registry)
    config = demo.get_config_file()
    choices = [tuple(c) for c in _component(config, "methods")["choices"]]
    assert [key for _, key in choices] == list(registry.order) and ("Mean code", "mean") in choices
    radio = _component(config, "preset_mean")
    assert radio["label"] == "Mean code preset" and [c[1] for c in radio["choices"]] == ["fast", "slow"]
    assert _invert_parameters(demo) == ["family", "methods", "preset_w", "preset_mean", "preset_wplus",
                                        "preset_pti", "seed", "allow_long"]
    assert "| **Mean code** | the average code, no fitting |" in app.methods_help(registry)
    assert app.download_order(registry) == app.DOWNLOAD_ORDER  # it brings no files
    # the shipped app keeps the gradio_client contract: (family, methods, preset_w, preset_wplus, preset_pti, seed),
    # plus an optional last allow_long (confirms a CPU run estimated past 5 minutes; default False)
    shipped = app.build_demo({"tiny": tiny_model_set()})
    assert _invert_parameters(shipped) == ["family", "methods", "preset_w", "preset_wplus", "preset_pti", "seed",
                                           "allow_long"]


def test_one_e4e_pass_per_photo_and_run(image, monkeypatch):
    monkeypatch.setitem(M.APP_PRESETS, ("w", "fast"), {"steps": 2, "start": "e4e", "lr": 0.01})
    monkeypatch.setitem(M.APP_PRESETS, ("w+", "fast"), {"steps": 2, "start": "e4e", "lr": 0.01})
    monkeypatch.setitem(M.APP_PRESETS, ("pti", "fast"), {"pivot": "e4e", "tune_steps": 2})
    models = tiny_model_set()
    starts = StartCache()
    results = {m: invert(models, m, image, preset="fast", starts=starts) for m in ("e4e", "w", "w+", "pti")}
    assert starts.encoder_passes == 1
    assert all(results[m].info["start"] == "e4e" for m in ("w", "w+", "pti"))
    again = StartCache().codes(models, "e4e", image)  # what a fresh pass gives
    assert torch.equal(results["e4e"].w_plus, again)
    other = image.flip(-1)
    starts.codes(models, "e4e", other)
    assert starts.encoder_passes == 2  # another photo is another pass


class _NoLpips(TinyModelSet):
    def lpips(self):
        raise CheckpointMissingError("weight file 'vgg16' is missing")


def test_missing_lpips_is_said_in_results_and_cli_files(image, tmp_path, monkeypatch):
    monkeypatch.setitem(M.APP_PRESETS, ("w", "fast"), {"steps": 2, "start": "e4e", "lr": 0.01})
    models = _NoLpips()
    inv = invert(models, "w", image, preset="fast")
    assert inv.info["lpips_used"] is False and inv.info["warning"] == M.MSE_ONLY_NOTE
    recipe = inv.info["recipe"]
    assert recipe["app_options"] == {"steps": 2, "lr": 0.01} and recipe["start"] == "e4e"
    assert recipe["space"] == "w" and recipe["steps"] == 2 and recipe["lr"] == 0.01  # the recipe that ran
    with_lpips = invert(tiny_model_set(), "w", image, preset="fast")
    assert with_lpips.info["lpips_used"] is True and "warning" not in with_lpips.info
    assert "optimize on MSE alone" in S.status_markdown(models, lambda name: False)

    rc = cli.main([str(HOPPER), "--out", str(tmp_path), "--methods", "e4e,w", "--preset", "fast", "-q"],
                  model_sets=lambda device, locate: {"tiny": _NoLpips()}, stdout=io.StringIO(),
                  stderr=(err := io.StringIO()))
    assert rc == 0 and M.MSE_ONLY_NOTE in err.getvalue()
    record = json.loads((tmp_path / "grace_hopper" / "metrics.json").read_text())
    assert record["methods"]["w"]["optimized_on"] == "MSE only"
    assert record["methods"]["w"]["warning"] == M.MSE_ONLY_NOTE
    assert record["methods"]["e4e"]["optimized_on"] == ""
    assert any(M.MSE_ONLY_NOTE in w for w in record["warnings"])
    with open(tmp_path / "metrics.csv", newline="") as fh:
        rows = {r["method"]: r for r in csv.DictReader(fh)}
    assert rows["w"]["optimized_on"] == "MSE only" and rows["e4e"]["optimized_on"] == ""


def test_run_times_come_from_the_measurement_file(tmp_path):
    path = tmp_path / "runtimes.json"
    path.write_text(json.dumps({"cpu": {"e4e": {"default": 2.04}, "w+": {"fast": 18.4, "balanced": float("nan")}},
                                "cuda": {"pti": {"fast": 7.5}}}))
    runtimes = S.load_runtimes(path)
    assert runtimes == {"cpu": {"e4e": {"default": 2.04}, "w+": {"fast": 18.4}}, "cuda": {"pti": {"fast": 7.5}}}
    table = S.methods_help_markdown(runtimes)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[3:5]]
            for line in table.splitlines() if line.startswith("| **")}
    assert rows["**e4e encoder**"] == ["2.0 s", "not measured"]
    assert rows["**W+ optimization**"][0] == "*fast* 18 s · *balanced* not measured · *quality* not measured"
    assert rows["**PTI (pivotal tuning)**"] == ["not measured", "*fast* 7.5 s · *balanced* not measured · "
                                                "*quality* not measured"]
    assert S.load_runtimes(tmp_path / "absent.json") == {}
    assert "No run times are measured yet" in S.methods_help_markdown({})


def test_app_and_cli_choose_the_device_in_one_place():
    from inversion.device import default_device
    from inversion.models import choose_device

    assert choose_device("cpu") == torch.device("cpu") and choose_device() == default_device()
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            choose_device("cuda")
        rc = cli.main([str(HOPPER), "--out", "unused", "--device", "cuda"], stdout=io.StringIO(),
                      stderr=(err := io.StringIO()))
        assert rc == 2 and "no CUDA GPU" in err.getvalue()
