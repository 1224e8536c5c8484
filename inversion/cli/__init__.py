"""Command line: invert one photo or whole folders with the app's own functions (:mod:`inversion.session`).

``python -m inversion.cli photos/ --out results/ --methods e4e,w+ --preset fast --edit smile=2 --paste-back``

Per photo, ``OUT/<safe name>/`` receives ``aligned.png``, ``<m>.png`` and ``<m>_wplus.npy`` (codes
``(1, n_latent, 512)``; ``<m>`` is the method's file name: ``e4e``, ``psp``, ``w``, ``wplus``, ``pti``),
``<m>_<edit>.png`` and ``<m>_<edit>_wplus.npy`` per edit, ``<m>[_<edit>]_pasted.png`` with ``--paste-back``, and
``metrics.json`` (settings, metrics per method, warnings), written last: a folder with a ``metrics.json`` is
complete. ``OUT/metrics.csv`` (one row per photo and method) and ``OUT/summary.json`` cover the batch. A rerun skips
photos already done with the same settings and source file; results made with other settings or from another file
are never replaced without ``--overwrite`` (the run stops first, with one line).

Exit status: 0 when at least one photo is done (now or by an earlier run), 1 when none, 2 for bad arguments
(a missing input, an ``--out`` holding other results), 130 when stopped with Ctrl-C (what was finished is kept). ``main(argv, model_sets=...)`` lets tests inject models.
"""
from __future__ import annotations

from inversion.cli.args import DEFAULT_METHODS, PROG, EditArg, UsageError, build_parser
from inversion.cli.batch import CSV_COLUMNS, PARTIAL, STATUSES, write_batch_files
from inversion.cli.command import main
from inversion.cli.inputs import IMAGE_SUFFIXES, _display, collect_inputs, folder_names, safe_stem  # noqa: F401
from inversion.cli.loading import FatalError, Loaded, ModelSetFactory, default_model_sets, load_models
from inversion.cli.photo import FORMAT, METRIC_KEYS, PhotoSkipped, invert_photo
from inversion.cli.report import Reporter

__all__ = [
    "CSV_COLUMNS", "DEFAULT_METHODS", "EditArg", "FORMAT", "FatalError", "IMAGE_SUFFIXES", "Loaded", "METRIC_KEYS",
    "ModelSetFactory", "PARTIAL", "PROG", "PhotoSkipped", "Reporter", "STATUSES", "UsageError", "build_parser",
    "collect_inputs", "default_model_sets", "folder_names", "invert_photo", "load_models", "main", "safe_stem",
    "write_batch_files",
]
