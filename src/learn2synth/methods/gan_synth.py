"""GAN-synthesized pairs with a progressive realism-weighted loss (after Girardot et al.).

Phase 1 (``gan.pretrain_steps`` steps): a pix2pix label-to-image GAN (:mod:`learn2synth.generative.pix2pix`)
learns from the real labeled pairs; the segmenter is not updated. Phase 2: each step the segmenter trains on a
real batch plus a batch of GAN-synthetic pairs, whose label maps are composed from real ones (flips, deformation,
pasted structures: :mod:`learn2synth.generative.compose`) and rendered by the generator. Item ``i`` of the
synthetic batch adds ``alpha * log(t + 1) * realism_i`` times its loss, ``t`` the phase-2 epoch
(``gan.epoch_steps`` steps each) and ``realism_i`` in [0, 1] from the discriminator's score of the image; so the
first epoch trains on real pairs alone and the synthetic share grows as the segmenter matures. By default
(``gan.realism: batch_rank``) ``realism_i`` is the image's rank among the synthetic batch (see
:func:`learn2synth.generative.pix2pix.realism`): the less realistic images are down-weighted rather than all
of them zeroed, which an absolute score (``clipped_bce``) did on OASIS once the discriminator won.
``gan.realism_weight: false`` drops the realism factor (an ablation: are the GAN's images useful at all?).

The GAN is frozen in phase 2 by default (``gan.keep_training: false``): the realism weight is then a fixed
function of the image rather than a moving target (a discriminator still training against the generator keeps
re-ranking the same images), and a phase-2 step costs one generator and one discriminator forward pass instead
of a full GAN step, which on a CPU roughly doubles the segmenter's share of the budget. ``keep_training: true``
takes one GAN step per segmenter step. ``learn2synth gan train`` runs phase 1 alone; its run folder continues
into phase 2 with ``learn2synth train --resume``.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..generative.compose import compose_masks
from ..generative.pix2pix import Pix2Pix, Pix2PixTrainer, percentile, realism, schedule_factor
from ..rng import derive_seed
from .base import Method


class GanSynth(Method):
    synthesizes = False  # images come from the GAN, label maps from the real labels

    def __init__(self, config, data, generator, device, reduce=None):
        super().__init__(config, data, generator, device, reduce)
        if reduce is not None:
            raise ConfigError("method", "gan_synth runs in one process: its GAN's gradients are not averaged over "
                                        "processes (torchrun)")
        g = config.gan
        torch.manual_seed(derive_seed(config.seed, "gan_init"))
        self.gan = Pix2Pix.from_config(config).to(device)
        self.trainer = Pix2PixTrainer(self.gan, lr=g.lr, betas=g.betas, l1_weight=g.l1_weight)

    def step(self, step: int) -> dict:
        g = self.config.gan
        values = {}
        if step < g.pretrain_steps or g.keep_training:
            xr, yr = self.real_batch(augment=True)
            values = self.trainer.step(yr, xr, self.generator)
        if step < g.pretrain_steps:
            return values
        factor = schedule_factor(step - g.pretrain_steps, g.epoch_steps, g.alpha)
        xr, yr = self.real_batch(augment=True)
        if factor == 0:  # first epoch: the synthetic loss has weight 0, so no synthetic batch is made
            return {**values, "loss_seg": self.update(xr, yr), "synth_weight": 0.0}
        xs, ys = self.gan_batch()
        with torch.no_grad():
            fake_logits = self.gan.discriminate(ys, xs)
            real_logits = self.gan.discriminate(yr, xr) if g.realism == "real_rank" else None
            real_ness = realism(g.realism, fake_logits, real_logits)
        weights = factor * real_ness if g.realism_weight else torch.full_like(real_ness, factor)
        n = xr.shape[0]

        def loss(params):
            logits = self.logits(params, torch.cat([xr, xs]))
            synth = torch.stack([self.loss_fn(logits[n + i: n + i + 1], ys[i: i + 1]) for i in range(len(ys))])
            return self.loss_fn(logits[:n], yr) + (weights * synth).mean()

        return {**values, "loss_seg": self.update_on(loss), "synth_weight": float(weights.mean()),
                "realism": float(real_ness.mean()),
                "realism_min": float(real_ness.min())}

    @torch.no_grad()
    def gan_batch(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Synthetic pairs (image, label map): real label maps, composed, rendered by the generator."""
        g = self.config.gan
        _, labels = self.real.batch(n or self.config.batch_size, self.config.data.shape, self.generator)
        labels, _ = compose_masks(labels.to(self.device), self.generator, flip=g.flip, rotation=g.rotation,
                                  scaling=g.scaling, elastic_std=g.elastic_std, paste=g.paste)
        return self.gan.generate(labels, self.generator), labels

    @torch.no_grad()
    def evaluate(self, pool) -> dict[str, float]:
        """The segmenter's Dice, and the GAN on whole held-out pairs: L1 of its image to the real one, the mean
        discriminator score (mean logit) of both, and the mean percentile of a generated image's score among the
        real images' scores (0: the discriminator tells every one apart; 0.5: it cannot). Its noise comes from a
        fixed stream, not the run's (validation changes no state)."""
        out = super().evaluate(pool)
        noise = torch.Generator(device=self.device).manual_seed(derive_seed(self.config.seed, "gan_eval"))
        l1, fake, real = [], [], []
        for x, y in zip(pool.images, pool.labels, strict=True):
            x, y = x[None].to(self.device), y[None].to(self.device)
            image = self.gan.generate(y, noise)
            l1.append(float((image - x).abs().mean()))
            fake.append(self.gan.scores(y, image))
            real.append(self.gan.scores(y, x))
        fake, real = torch.cat(fake), torch.cat(real)
        return {**out, "gan_l1": sum(l1) / len(l1), "gan_score_fake": float(fake.mean()),
                "gan_score_real": float(real.mean()), "gan_fake_percentile": float(percentile(fake, real).mean())}

    def state_dict(self) -> dict:
        return {**super().state_dict(), **{f"gan_{k}": v for k, v in self.trainer.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.trainer.load_state_dict({k: state[f"gan_{k}"] for k in ("gan", "opt_g", "opt_d")})
