"""Preset names and the app's preset options per (method, preset); bf16 choice per device.

``APP_PRESETS`` maps (method, preset) -> the options a method's run function passes to the library on top of the
library's own preset (``inversion.optimize.PRESETS`` / ``inversion.pti.PRESETS``). Run functions read it when they
run, so a changed entry takes effect at once.
"""
from __future__ import annotations

PRESETS = ("fast", "balanced", "quality")


# The app's presets ARE the library's named recipes (inversion.recipes.RECIPES); APP_PRESETS holds only what the
# library cannot do itself (the e4e start / pivot). bf16 per device: inversion.device.use_bf16 (measured).
from inversion.device import use_bf16  # noqa: E402,F401
from inversion.recipes import APP_PRESETS  # noqa: E402,F401
