"""MuScleLoRA engine: data, backbones, attacks and probes, defenses, training, metrics, analysis.

No web or queue imports here: `api/` and `worker/` build on this package, never the other way.
"""

__version__ = "0.1.0"
