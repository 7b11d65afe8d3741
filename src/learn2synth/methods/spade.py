"""brainSPADE's segmenter: trained only on generated pairs, label maps rendered by a trained SPADE generator.

The label maps are the run's label pool; with ``data.labels: labelgen:RUN`` they are samples of a trained label
generator (:func:`learn2synth.sources.generated_labels`), so neither labels nor images are real. Each step
renders a batch of them with the SPADE run of ``spade.model`` in the style of one of the ``spade.style`` images
per item (the mean of its style code), or with style codes drawn from N(0, 1) when no style image is given, and
takes a plain segmenter step on the result. Real examples, if any, are used for validation only.
"""

import torch

from ..errors import ConfigError
from ..generative.checkpoints import load_generator
from ..generative.data import read_style_image
from .base import Method


class Spade(Method):
    uses_real = False

    def __init__(self, config, data, generator, device, reduce=None):
        super().__init__(config, data, generator, device, reduce)
        if config.spade.model is None:
            raise ConfigError("spade.model", "method spade needs a trained SPADE run (learn2synth spade train)")
        self.renderer = load_generator(config.spade.model, "spade", device)
        c, d = self.renderer.config, config.data
        if (c.n_classes, list(c.shape)) != (d.n_classes, list(d.shape)):
            raise ConfigError("data.shape", f"the SPADE run renders {c.shape} maps of {c.n_classes} classes; set "
                                            f"data.shape and data.n_classes to match (got {d.shape}, {d.n_classes})")
        styles = [read_style_image(p, c) for p in config.spade.style]
        with torch.no_grad():
            self.codes = torch.cat([self.renderer.style(s.to(device))[0] for s in styles]) if styles else None

    def step(self, step: int) -> dict:
        labels = self.label_batch()
        if self.codes is None:
            z = torch.randn(labels.shape[0], self.renderer.config.z_dim, generator=self.generator,
                            device=self.generator.device)
        else:
            z = self.codes[torch.randint(len(self.codes), (labels.shape[0],), generator=self.generator,
                                         device=self.generator.device)]
        with torch.no_grad():
            x = self.renderer.decode(labels, z.to(self.device))
        return {"loss_spade": self.update(x, labels)}
