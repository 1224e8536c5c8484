"""The methods the project ships, in run order. Adding a method: write its module (a :class:`Method`) and add
one ``METHODS.register(...)`` line here."""
from __future__ import annotations

from inversion.methods.base import MethodRegistry
from inversion.methods.encoding import E4E, PSP
from inversion.methods.hyperstyle import HYPERSTYLE
from inversion.methods.optimization import W, W_PLUS
from inversion.methods.tuning import PTI

METHODS = MethodRegistry()
METHODS.register(E4E)
METHODS.register(PSP)
METHODS.register(W)
METHODS.register(W_PLUS)
METHODS.register(PTI)
METHODS.register(HYPERSTYLE)
