"""Safe loading of weight files: ``weights_only`` torch pickles, safetensors subsets, state-dict layout checks."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence, Union

import torch

from inversion.checkpoints.download import _short
from inversion.checkpoints.registry import CheckpointError, CheckpointMissingError


def load_torch_file(path: Union[str, Path]) -> dict:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with plain-word errors; top level must be a dict.

    Nothing is allow-listed: the registry's pickles (rosinality ``{'g_ema', 'latent_avg'}``, pSp/e4e with a plain
    ``opts`` dict, the bare IR-SE50 state_dict) hold only tensors, dicts and plain values. rosinality *training*
    checkpoints (``args`` = ``argparse.Namespace``) are refused with a hint to re-save only ``g_ema``: no file the app
    needs contains one, and refusing keeps a single rule (plain data only) for hand-placed files.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointMissingError(f"weight file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure becomes one plain message
        text = str(e)
        if "Weights only load failed" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            hint = ""
            if "argparse.Namespace" in text:
                hint = ("; this looks like a rosinality training checkpoint: re-save just "
                        "{'g_ema': ckpt['g_ema']} to use it")
            raise CheckpointError(f"refused to load {path.name}: it contains code/objects that are not plain "
                                  f"tensors{what}{hint}") from None
        raise CheckpointError(f"could not read {path.name}: truncated, corrupt or not a PyTorch file "
                              f"({_short(e)})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name} holds a {type(obj).__name__}, expected a dict of tensors")
    return obj


def load_safetensors_subset(path: Union[str, Path], prefix: str, *,
                            strip_prefix: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file whose names start with ``prefix`` (e.g. ``"features."``), on CPU."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointMissingError(f"weight file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = list(f.keys())
            chosen = [k for k in keys if k.startswith(prefix)]
            if not chosen:
                raise CheckpointError(f"{path.name} has no tensors named '{prefix}*' (it has e.g. {keys[:3]})")
            return {(k[len(prefix):] if strip_prefix else k): f.get_tensor(k) for k in chosen}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"could not read {path.name} as safetensors ({_short(e)})") from None


def check_state_dict(sd: Mapping[str, torch.Tensor], expected: Mapping[str, Sequence[int]], what: str, *,
                     limit: int = 5) -> None:
    """Raise :class:`CheckpointError` unless ``sd`` has exactly the keys of ``expected`` with those shapes."""
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} != {tuple(expected[k])}" for k in expected
             if k in sd and tuple(sd[k].shape) != tuple(expected[k])]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
        if items:
            more = f", ... ({len(items)} in all)" if len(items) > limit else ""
            parts.append(f"{label}: {', '.join(items[:limit])}{more}")
    if parts:
        raise CheckpointError(f"{what} does not have the expected layout: " + "; ".join(parts))
