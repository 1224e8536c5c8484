"""Loading HyperStyle: the official FFHQ files and our bundled small model; the loaded pair of networks.

Official files (yuval-alaluf/hyperstyle):

- ``hyperstyle_ffhq.pt``: ``state_dict`` with ``hypernet.*`` (429 keys: the shared hypernetwork's four tensors appear
  under ten names) and ``decoder.*`` (the rosinality FFHQ 1024 generator, 171 keys), ``opts`` (a plain dict:
  ``encoder_type``, ``input_nc``, ``layers_to_tune``, ``output_size``, ...) and ``latent_avg``;
- ``faces_w_encoder.pt``: ``state_dict`` with ``encoder.*`` (``WEncoder(50, 'ir_se')``, 387 keys) and ``decoder.*``
  (not used: HyperStyle decodes with its own decoder and adds *its* ``latent_avg`` to the W code).

Bundled (built-in family): ``builtin_hyperstyle<size>.safetensors`` (``hypernet.*``, shared tensors once) + ``.json``
(``HyperNetConfig``, ``n_iters``, ``initial``: which bundled encoder gives the starting code, training info).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from inversion.checkpoints import CheckpointError, check_state_dict
from inversion.encoders import EncoderBundle, n_styles_for_size
from inversion.hyperstyle import (N_ITERS, Deltas, HyperNet, HyperNetConfig, WEncoder, adjusted_generator,
                                  layer_shapes, refine)
from inversion.stylegan2 import Generator, config_from_state_dict, generator_from_state_dict

__all__ = ["HyperStyleBundle", "HyperStyleCheckpointError", "HypernetCheckpoint", "bundled_hyperstyle_files",
           "infer_hypernet_config", "load_bundled_hyperstyle", "load_hyperstyle_checkpoint", "load_hyperstyle_files",
           "load_hypernet_checkpoint", "load_w_encoder_checkpoint"]

_HYPERNET_TYPE = "SharedWeightsHyperNetResNet"


class HyperStyleCheckpointError(CheckpointError):
    """A HyperStyle / W-encoder checkpoint does not have the expected structure."""


@dataclass(frozen=True)
class HyperStyleBundle:
    """A hypernetwork, the encoder giving its starting code, and what both need.

    ``encoder(images)`` returns ``(N, D)`` W codes (the official W-encoder) or ``(N, n_styles, D)`` W+ codes (our
    built-in uses its e4e), before ``latent_avg`` ``(n_styles, D)``. ``decoder_state_dict`` is the official
    decoder (empty for bundled models: they run on the family's generator).
    """

    hypernet: HyperNet
    encoder: nn.Module
    latent_avg: torch.Tensor
    decoder_state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    opts: dict[str, Any] = field(default_factory=dict)
    n_iters: int = N_ITERS

    @property
    def input_size(self) -> int:
        return self.hypernet.config.input_size

    def initial_codes(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 3, S, S)`` in [-1, 1] -> starting W+ codes ``(N, n_styles, D)`` (``latent_avg`` added)."""
        codes = self.encoder(images)
        avg = self.latent_avg.to(device=codes.device, dtype=codes.dtype)
        if codes.dim() == 2:
            codes = codes[:, None].expand(-1, avg.shape[0], -1)
        return codes + avg

    def build_generator(self) -> Generator:
        """The official decoder as our ``Generator`` (float32, eval, no gradients)."""
        if not self.decoder_state_dict:
            raise HyperStyleCheckpointError("this HyperStyle model has no decoder of its own")
        try:
            return generator_from_state_dict(self.decoder_state_dict)
        except (ValueError, RuntimeError) as err:
            raise HyperStyleCheckpointError(f"the HyperStyle decoder weights do not fit the StyleGAN2 layout: {err}") \
                from None

    @torch.no_grad()
    def invert(self, g: Generator, images: torch.Tensor, *, n_iters: Optional[int] = None
               ) -> tuple[torch.Tensor, Deltas, torch.Tensor]:
        """``(codes, summed weight deltas, image)`` for images ``(N, 3, S, S)`` at the hypernetwork's input size."""
        codes = self.initial_codes(images)
        deltas, image = refine(self.hypernet, g, images, codes, n_iters=self.n_iters if n_iters is None else n_iters)
        return codes, deltas, image

    @torch.no_grad()
    def adjusted(self, g: Generator, image: torch.Tensor, *, n_iters: Optional[int] = None
                 ) -> tuple[torch.Tensor, Generator]:
        """One image ``(1, 3, S, S)`` -> ``(W+ code (1, n_styles, D), adjusted generator)``."""
        codes, deltas, _ = self.invert(g, image, n_iters=n_iters)
        return codes, adjusted_generator(g, deltas)


# --------------------------------------------------------------------------------------------------------------------


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _shared_alias(key: str) -> Optional[str]:
    """``refinement_blocks.{i}.hypernet.w1`` -> ``shared_weight_hypernet.w1``; None for other keys."""
    parts = key.split(".")
    if len(parts) == 4 and parts[0] == "refinement_blocks" and parts[2] == "hypernet":
        return "shared_weight_hypernet." + parts[3]
    return None


def _load_module(module_cls, kwargs: dict, state: dict[str, torch.Tensor], what: str, dtype: torch.dtype) -> nn.Module:
    with torch.device("meta"):
        module = module_cls(**kwargs)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    try:
        check_state_dict(state, expected, what)
    except CheckpointError as err:
        raise HyperStyleCheckpointError(str(err)) from None
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval().requires_grad_(False)


def _load_hypernet(state: dict[str, torch.Tensor], config: HyperNetConfig, dtype: torch.dtype) -> HyperNet:
    """Strictly load a hypernetwork; every alias of the shared tensors must equal the canonical one (then shares it)."""
    state = dict(state)
    for key in list(state):
        canon = _shared_alias(key)
        if canon is None or canon not in state:
            continue
        a, b = state[key], state[canon]
        if a is not b and a.data_ptr() != b.data_ptr() and (a.shape != b.shape or not torch.equal(a, b)):
            raise HyperStyleCheckpointError(f"hypernet.{key} differs from hypernet.{canon}: they must be one tensor")
        state[key] = b
    net = _load_module(HyperNet, {"config": config}, state, "the HyperStyle hypernetwork ('hypernet.*')", dtype)
    return net


def _latent_avg(stored: Any, n_styles: int, dim: int) -> torch.Tensor:
    if stored is None:
        raise HyperStyleCheckpointError("the HyperStyle checkpoint has no 'latent_avg'")
    avg = torch.as_tensor(stored).detach()
    if tuple(avg.shape) not in ((dim,), (1, dim), (n_styles, dim)):
        raise HyperStyleCheckpointError(f"latent_avg must be ({dim},), (1, {dim}) or ({n_styles}, {dim}), "
                                        f"got {tuple(avg.shape)}")
    return avg.reshape(-1, dim).expand(n_styles, dim).clone()


def _blocks(state: dict[str, torch.Tensor], prefix: str, leaf: str) -> list[torch.Tensor]:
    """``state[f"{prefix}{i}.{leaf}"]`` for i = 0, 1, ... while present."""
    out, i = [], 0
    while f"{prefix}{i}.{leaf}" in state:
        out.append(state[f"{prefix}{i}.{leaf}"])
        i += 1
    return out


def _stages(widths: list[int], starts: Optional[list[bool]] = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-unit widths -> (stage widths, units per stage); a stage starts where ``starts`` says, else where the
    width changes."""
    stage_w: list[int] = []
    units: list[int] = []
    for i, w in enumerate(widths):
        new_stage = (starts[i] if starts is not None else stage_w[-1] != w) if stage_w else True
        if not new_stage:
            units[-1] += 1
        else:
            stage_w.append(w)
            units.append(1)
    return tuple(stage_w), tuple(units)


def infer_hypernet_config(state: dict[str, torch.Tensor], shapes: tuple[tuple[int, int, int], ...]) -> HyperNetConfig:
    """The architecture a ``hypernet.*`` state dict (prefix stripped) describes, for a generator with ``shapes``.

    Widths, units, tuned and shared layers and the input size follow from the keys and shapes (the official FFHQ
    file gives the defaults of :class:`HyperNetConfig`); :func:`_load_hypernet` then checks every key strictly.
    """
    try:
        body = _blocks(state, "body.", "conv1.weight")
        stage_widths, units = _stages([int(w.shape[0]) for w in body],
                                      [f"body.{i}.downsample.0.weight" in state for i in range(len(body))])
        w1 = state["shared_weight_hypernet.w1"]
        tuned = tuple(i for i in range(len(shapes)) if any(k.startswith(f"refinement_blocks.{i}.") for k in state))
        shared = tuple(i for i in tuned if f"refinement_blocks.{i}.linear.weight" in state)
        own = [i for i in tuned if i not in shared]
        spatial = None
        if shared:
            n = sum(1 for k in state if k.startswith(f"refinement_blocks.{shared[0]}.convs.") and k.endswith("weight"))
            spatial = 2 ** (n - 1)
            shared_inner = int(state[f"refinement_blocks.{shared[0]}.convs.0.weight"].shape[0])
        else:
            shared_inner = 128
        refine_inner, refine_width = 256, 512
        if own:
            i = own[0]
            convs = [k for k in state if k.startswith(f"refinement_blocks.{i}.convs.") and k.endswith("weight")]
            refine_inner = int(state[f"refinement_blocks.{i}.convs.0.weight"].shape[0])
            refine_width = int(state[f"refinement_blocks.{i}.convs.{2 * (len(convs) - 1)}.weight"].shape[0])
            if spatial is None:
                spatial = 2 ** (len(convs) + (1 if shapes[i][0] == 3 else 0))
        return HyperNetConfig(
            layer_shapes=shapes, layers_to_tune=tuned, shared_layers=shared,
            input_nc=int(state["conv1.weight"].shape[1]), input_size=16 * (spatial or 16),
            widths=stage_widths, units=units, shared_width=int(w1.shape[1]) // 9, z_dim=int(w1.shape[0]),
            shared_inner=shared_inner, refine_width=refine_width, refine_inner=refine_inner)
    except (KeyError, IndexError) as err:
        raise HyperStyleCheckpointError(f"the hypernetwork weights do not have the HyperStyle layout ({err})") from None


def _w_encoder_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    widths, units = _stages([int(w.shape[0]) for w in _blocks(state, "body.", "res_layer.1.weight")])
    if not widths or "linear.weight" not in state:
        raise HyperStyleCheckpointError("the W-encoder weights do not have the WEncoder layout")
    return {"widths": widths, "units": units, "style_dim": int(state["linear.weight"].shape[0])}


@dataclass(frozen=True)
class HypernetCheckpoint:
    """What ``hyperstyle_ffhq.pt`` holds: the hypernetwork, its ``latent_avg`` ``(n_styles, D)``, the decoder's
    state dict (rosinality layout) and the options."""

    hypernet: HyperNet
    latent_avg: torch.Tensor
    decoder_state_dict: dict[str, torch.Tensor]
    opts: dict[str, Any]


def _check_container(ckpt: Any, name: str) -> None:
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        got = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise HyperStyleCheckpointError(f"expected a {name} checkpoint dict with a 'state_dict' entry, got {got}")


def load_hypernet_checkpoint(hyper: dict[str, Any], *, dtype: torch.dtype = torch.float32) -> HypernetCheckpoint:
    """Official ``hyperstyle_ffhq.pt`` dict (``torch.load(weights_only=True)``) -> :class:`HypernetCheckpoint`.

    The architecture is read from the keys (any output size; the generator's layer shapes from ``decoder.*``), then
    every key and shape is checked strictly. ``dtype``: of the loaded network (float64 for parity tests).
    """
    _check_container(hyper, "hyperstyle")
    opts = dict(hyper.get("opts") or {})
    opts.setdefault("encoder_type", _HYPERNET_TYPE)
    if opts["encoder_type"] != _HYPERNET_TYPE:
        raise HyperStyleCheckpointError(f"only {_HYPERNET_TYPE} hypernetworks are supported, "
                                        f"this one is {opts['encoder_type']!r}")
    hn_state, dec_state = _strip(hyper["state_dict"], "hypernet."), _strip(hyper["state_dict"], "decoder.")
    if not hn_state or not dec_state:
        raise HyperStyleCheckpointError("the HyperStyle state_dict must hold 'hypernet.*' and 'decoder.*' weights")
    try:
        g_config = config_from_state_dict(dec_state)
    except ValueError as err:
        raise HyperStyleCheckpointError(f"the HyperStyle decoder is not a StyleGAN2 generator: {err}") from None
    size = int(g_config["size"])
    if int(opts.setdefault("output_size", size)) != size:
        raise HyperStyleCheckpointError(f"opts say output_size {opts['output_size']} but the decoder is {size} px")
    shapes = tuple(layer_shapes(size, channel_multiplier=g_config["channel_multiplier"],
                                max_channels=g_config["max_channels"]))
    config = infer_hypernet_config(hn_state, shapes)
    try:
        hypernet = _load_hypernet(hn_state, config, dtype)
    except ValueError as err:
        raise HyperStyleCheckpointError(f"the hypernetwork weights do not describe a usable network: {err}") from None
    latent_avg = _latent_avg(hyper.get("latent_avg"), n_styles_for_size(size), g_config["style_dim"]).to(dtype)
    return HypernetCheckpoint(hypernet=hypernet, latent_avg=latent_avg, decoder_state_dict=dec_state, opts=opts)


def load_w_encoder_checkpoint(w_encoder: dict[str, Any], *, dtype: torch.dtype = torch.float32) -> WEncoder:
    """Official ``faces_w_encoder.pt`` dict -> the :class:`WEncoder` (its ``decoder.*`` copy is not used)."""
    _check_container(w_encoder, "W-encoder")
    w_opts = dict(w_encoder.get("opts") or {})
    if w_opts.get("encoder_type", "WEncoder") != "WEncoder":
        raise HyperStyleCheckpointError(f"the W-encoder checkpoint holds a {w_opts['encoder_type']!r}, not a WEncoder")
    enc_state = _strip(w_encoder["state_dict"], "encoder.")
    if not enc_state:
        raise HyperStyleCheckpointError("the W-encoder state_dict has no 'encoder.*' weights")
    return _load_module(WEncoder, _w_encoder_kwargs(enc_state), enc_state, "the W-encoder weights ('encoder.*')",
                        dtype)


def load_hyperstyle_checkpoint(hyper: dict[str, Any], w_encoder: dict[str, Any], *,
                               dtype: torch.dtype = torch.float32) -> HyperStyleBundle:
    """Both official dicts (``hyperstyle_ffhq.pt``, ``faces_w_encoder.pt``) -> a :class:`HyperStyleBundle`."""
    hn = load_hypernet_checkpoint(hyper, dtype=dtype)
    encoder = load_w_encoder_checkpoint(w_encoder, dtype=dtype)
    return HyperStyleBundle(hypernet=hn.hypernet, encoder=encoder, latent_avg=hn.latent_avg,
                            decoder_state_dict=hn.decoder_state_dict, opts=hn.opts, n_iters=N_ITERS)


def load_hyperstyle_files(hyper_path: "str | Path", w_encoder_path: "str | Path") -> HyperStyleBundle:
    """Load the two official files safely (``weights_only=True``, memory-mapped) into a float32 bundle."""
    try:
        hyper = torch.load(hyper_path, map_location="cpu", weights_only=True, mmap=True)
        w_enc = torch.load(w_encoder_path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise HyperStyleCheckpointError(f"could not read the HyperStyle files: {err}") from None
    return load_hyperstyle_checkpoint(hyper, w_enc)


# --------------------------------------------------------------------------------------------------------------------
# Our bundled model


def bundled_hyperstyle_files(hypernet: HyperNet, *, output_size: int, initial: str = "e4e", n_iters: int = N_ITERS,
                             info: Optional[dict] = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, config)`` to store a hypernetwork we trained (shared tensors once: safetensors cannot alias)."""
    tensors = {f"hypernet.{k}": v.detach().contiguous() for k, v in hypernet.state_dict().items()
               if _shared_alias(k) is None}
    config = {"kind": "hyperstyle", "output_size": output_size, "initial": initial, "n_iters": n_iters,
              "hypernet": hypernet.config.to_json()}
    if info:
        config["info"] = info
    return tensors, config


def load_bundled_hyperstyle(tensors: dict[str, torch.Tensor], config: dict[str, Any],
                            initial: EncoderBundle) -> HyperStyleBundle:
    """Bundle from :func:`bundled_hyperstyle_files` output; ``initial``: the encoder named by ``config['initial']``."""
    if config.get("kind") != "hyperstyle":
        raise HyperStyleCheckpointError(f"expected a hyperstyle model, the config says {config.get('kind')!r}")
    try:
        hn_config = HyperNetConfig.from_json(config["hypernet"])
    except (KeyError, TypeError, ValueError) as err:
        raise HyperStyleCheckpointError(f"the hyperstyle config is not usable: {err}") from None
    state = _strip(tensors, "hypernet.")
    for i in hn_config.layers_to_tune:
        if i in hn_config.shared_layers:
            for name in ("w1", "b1", "w2", "b2"):
                if f"shared_weight_hypernet.{name}" in state:
                    state[f"refinement_blocks.{i}.hypernet.{name}"] = state[f"shared_weight_hypernet.{name}"]
    try:
        hypernet = _load_hypernet(state, hn_config, torch.float32)
    except ValueError as err:
        raise HyperStyleCheckpointError(f"the hyperstyle config does not describe a usable network: {err}") from None
    return HyperStyleBundle(hypernet=hypernet, encoder=initial.encoder, latent_avg=initial.latent_avg,
                            opts={"output_size": int(config.get("output_size", 0))},
                            n_iters=int(config.get("n_iters", N_ITERS)))
