"""The command line's arguments: parser, ``--edit`` / ``--methods`` values, presets per method."""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from editing import EDITS, EditError, get_edit
from inversion import session as S
from inversion.methods import METHODS, MethodRegistry
from inversion.models import FAMILIES


PROG = "python -m inversion.cli"
DEFAULT_METHODS = "e4e,psp"


class UsageError(ValueError):
    """A bad command-line argument found after parsing (exit status 2)."""


@dataclass(frozen=True)
class EditArg:
    """One ``--edit NAME[:COMPONENT][=OFFSET]``; ``offset`` None = the edit's default."""

    name: str
    component: Optional[int] = None
    offset: Optional[float] = None

    def key(self, offset: float) -> str:
        """File-name part, e.g. ``age+3``, ``sefa0-5``."""
        return f"{self.name}{'' if self.component is None else self.component}{offset:+g}"


def _edit_arg(text: str) -> EditArg:
    head, eq, value = text.partition("=")
    name, colon, comp = head.strip().partition(":")
    try:
        spec = get_edit(name)
    except EditError as err:
        # a model's own edit by its attribute name ("glasses" for builtin_glasses); which model: resolved later
        own = [e for e in EDITS for g in (e.generators or ()) if e.name == f"{g}_{name}"]
        if not own:
            raise argparse.ArgumentTypeError(str(err)) from None
        spec = own[0]
    component = None
    if colon:
        if not spec.is_explorer:
            raise argparse.ArgumentTypeError(f"the edit {name!r} has no component to choose")
        if not comp.isdigit():
            raise argparse.ArgumentTypeError(f"component must be a whole number >= 0, got {comp!r}")
        component = int(comp)
    elif spec.is_explorer:
        component = 0
    offset = None
    if eq:
        try:
            offset = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"the strength in {text!r} is not a number") from None
        if not math.isfinite(offset):
            raise argparse.ArgumentTypeError(f"the strength in {text!r} is not a finite number")
    return EditArg(name, component, offset)


def _methods_arg_for(registry: MethodRegistry):
    """The ``--methods`` value parser for ``registry``: names -> known methods in run order."""
    def parse(text: str) -> list[str]:
        names = [m.strip().lower() for m in text.split(",") if m.strip()]
        try:
            methods = S.order_methods(names, registry)
        except S.SessionError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        if not methods:
            raise argparse.ArgumentTypeError("name at least one method")
        return methods
    return parse


def _methods_arg(text: str) -> list[str]:
    return _methods_arg_for(METHODS)(text)


def _preset_names(registry: MethodRegistry) -> list[str]:
    return list(dict.fromkeys(p for m in registry.with_presets() for p in m.presets))


def build_parser(registry: MethodRegistry = METHODS) -> argparse.ArgumentParser:
    """The argument parser (``--help`` shows the method, preset and edit names of ``registry``)."""
    edits = ", ".join(e.name for e in EDITS)
    with_presets = ", ".join(m.key for m in registry.with_presets())
    methods_help = "\n".join(f"  {m.key:<5} {m.label}: {m.description}" for m in registry.values())
    parse_methods = _methods_arg_for(registry)
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Invert face photos into StyleGAN2 codes with the app's methods; optionally edit and paste back.",
        epilog=f"methods: {', '.join(registry.order)}; presets ({with_presets}): "
               f"{', '.join(_preset_names(registry))}\n{methods_help}\n"
               f"edits: {edits}\n"
               "  (the built-in model's own directions answer to their short names too: smile = builtin_smile, ...)\n\n"
               f"example: {PROG} photos/ --out results/ --methods e4e,w+ --preset fast --edit smile=2 --paste-back\n"
               "exit status: 0 = at least one photo done, 1 = none, 2 = bad arguments, 130 = stopped (Ctrl-C)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="photo files and/or folders of photos")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="DIR", help="output folder (created)")
    p.add_argument("-r", "--recursive", action="store_true", help="also look in sub-folders of INPUT folders")
    p.add_argument("--methods", type=parse_methods, default=parse_methods(DEFAULT_METHODS), metavar="LIST",
                   help=f"comma-separated methods (default {DEFAULT_METHODS}) of: {', '.join(registry.order)}; "
                        "fast ones run first")
    p.add_argument("--preset", action="append", default=[], metavar="[METHOD=]PRESET",
                   help=f"preset for {with_presets}, or for one method (repeatable); default fast on CPU, "
                        "balanced on GPU")
    p.add_argument("--family", default="auto", metavar="NAME",
                   help=f"model family: auto (default: FFHQ when its weights are here, else the built-in "
                        f"model), {', '.join(FAMILIES)}")
    p.add_argument("--edit", action="append", default=[], type=_edit_arg, metavar="NAME[:COMPONENT][=OFFSET]",
                   help="apply an edit to every result (repeatable; each edit gives its own images)")
    p.add_argument("--paste-back", action="store_true", help="warp each result (and each edit) back into the photo")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, default=0, help="seed of the optimization methods (default 0)")
    p.add_argument("--face", type=int, default=0, metavar="INDEX",
                   help="which detected face to use, 0 = the most confident (default)")
    p.add_argument("--all-faces", action="store_true",
                   help="invert every face (up to 8, reading order) with the same methods and edits; with "
                        "--paste-back, every edited face is pasted back into one photo (files face<N>_*)")
    p.add_argument("--batch", type=_batch_arg, default=0, metavar="N",
                   help="photos run together by the methods that can (e4e, pSp, W, W+): 0 = automatic (default: "
                        "from free GPU memory, up to 16; 1 on the CPU); results equal one-at-a-time runs within "
                        "float tolerance")
    p.add_argument("--no-resume", action="store_true", help="redo photos that an earlier run finished (same settings)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace results that an earlier run made in --out with other settings or from another "
                        "file (without it such a run stops before doing anything, and nothing is replaced)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output (skips and errors still show)")
    return p


def _batch_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch takes a whole number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("--batch must be 0 (automatic) or more")
    return value


def _presets(args_presets: Sequence[str], methods: Sequence[str], default: str,
             registry: MethodRegistry = METHODS) -> dict[str, str]:
    """Resolved preset per method: per-method ``METHOD=PRESET`` over a plain ``PRESET`` over ``default``."""
    names = _preset_names(registry)
    common, per_method = None, {}
    for text in args_presets:
        method, eq, preset = text.rpartition("=")
        preset = preset.strip().lower()
        if preset not in names:
            raise UsageError(f"unknown preset {preset!r}; choose one of {', '.join(names)}")
        if eq:
            method = method.strip().lower()
            if method not in registry or preset not in registry[method].presets:
                raise UsageError(f"--preset {text}: only {', '.join(m.key for m in registry.with_presets())} "
                                 "have presets")
            per_method[method] = preset
        else:
            common = preset
    out = {}
    for m in methods:
        choices = registry[m].presets
        out[m] = per_method.get(m) or (common if common in choices else None) or (
            default if default in choices else choices[0])
    return out
