"""learn2synth: segmentation with synthetic training data, and learning the synthesis itself.

Light by design: importing the package imports no submodule; ``import learn2synth.synth`` etc.
"""

__version__ = "0.1.0"
