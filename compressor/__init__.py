"""compressor: structured pruning from trained checkpoint to gated, deployable artifacts.

``import compressor`` is light (no torch, no CUDA initialisation); stages import what they need.
"""

__version__ = "0.1.0"
