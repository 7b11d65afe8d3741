"""Training strategies, one module each holding one :class:`~learn2synth.methods.base.Method` subclass.

:data:`METHODS` is the registry: a method's name (the config's ``method:``) -> ``"module:Class"`` in this
package. A new method is one module here and its line below; the config schema, the command line and the
trainer take the names from this dict and never branch on them. Modules are imported on first use, so reading
the names (``learn2synth --help``) stays instant.
"""

from __future__ import annotations

import importlib

METHODS: dict[str, str] = {
    "synthseg": "synthseg:SynthSeg",
    "real": "real:Real",
    "mixed": "mixed:Mixed",
    "finetune": "finetune:Finetune",
    "learn2synth": "learn2synth:Learn2Synth",
    "gan_synth": "gan_synth:GanSynth",
    "feature_da": "feature_da:FeatureDA",
    "spade": "spade:Spade",
}


def method_class(name: str) -> type:
    """The :class:`~learn2synth.methods.base.Method` subclass registered as ``name``."""
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


__all__ = ["METHODS", "method_class"]
