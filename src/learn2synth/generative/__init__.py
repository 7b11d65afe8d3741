"""Learned generators used as synthesis sources (built from MONAI generative networks)."""
