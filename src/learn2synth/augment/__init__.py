"""Learnable augmenters applied after the fixed synthesis; their parameters are the ``theta`` of the meta-step.

``parametric`` holds a few interpretable learned corruptions; ``residual`` a small U-Net that adds a learned
residual. Both draw their randomness in ``sample`` (explicit generator) and apply it deterministically in
``apply``, so a draw can be replayed.
"""
