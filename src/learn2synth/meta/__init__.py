"""Meta-learning of the synthesis: functional differentiable optimizers (``optim``) and the meta-step that
differentiates the segmenter's inner update with respect to the augmentation parameters (``hypergrad``)."""
