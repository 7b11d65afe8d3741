"""A pix2pix label-to-image GAN (Isola et al., CVPR 2017) from MONAI's parts, and the realism of its images.

The generator is MONAI's ``UNet`` (through :func:`learn2synth.nets.build_segmenter`) mapping the one-hot label
map (plus ``noise_channels`` of Gaussian noise drawn from an explicit generator) to one image channel, squashed
into [0, 1] by a sigmoid like the minmax-normalized real images. The discriminator is MONAI's
``PatchDiscriminator`` on the label map and an image (conditional, as in pix2pix), trained with MONAI's
``PatchAdversarialLoss`` (BCE criterion); the generator's loss is adversarial + ``l1_weight`` * L1 to the real
image. Instance norm instead of pix2pix's batch norm: it keeps no running statistics, so every forward pass is
free of side effects (an evaluation or a realism score changes nothing) and a resumed run stays bit-exact.
One code path for 2D and 3D (``spatial_dims``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..losses import one_hot
from ..nets import build_segmenter, padded_forward, total_stride
from ..synth import draw_normal


def _adversarial_loss(reduction: str = "mean"):
    from monai.losses import PatchAdversarialLoss

    return PatchAdversarialLoss(reduction=reduction, criterion="bce")


def image_scores(logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's score of each image: its patch logits (B, 1, *patches) averaged, (B,)."""
    return logits.flatten(1).mean(1)


def clipped_bce_realism(logits: torch.Tensor) -> torch.Tensor:
    """``1 - min(BCE(logits, real), 1)``, the BCE averaged over the image's patches: (B, 1, *patches) -> (B,).

    The first definition of the realism weight (``gan.realism: clipped_bce``). It is absolute, so once the
    discriminator separates real from fake (a logit of -0.54 or below on every patch of a fake) every synthetic
    image gets 0: on OASIS that happened within ~100 GAN steps and no synthetic pair ever got weight.

    >>> round(float(clipped_bce_realism(torch.zeros(1, 1, 2, 2))), 4)  # 1 - log 2
    0.3069
    """
    bce = _adversarial_loss("none")(logits, target_is_real=True, for_discriminator=False)[0]
    return 1 - bce.flatten(1).mean(1).clamp(0, 1)


def percentile(scores: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """For each score, the fraction of ``reference`` scores at or below it (the reference's empirical CDF), in
    [0, 1] and non-decreasing in the score.

    >>> percentile(torch.tensor([0.0, 2.0, 5.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist()
    [0.0, 0.5, 1.0]
    """
    return (reference[None, :] <= scores[:, None]).float().mean(1)


def realism(mode: str, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
    """The realism weight in [0, 1] of each synthetic image (``gan.realism``), from the discriminator's patch
    logits of the synthetic batch (B, 1, *patches) and, for ``real_rank``, of a batch of real images.

    - ``batch_rank`` (default): the percentile of the image's score (mean logit) among the synthetic batch's
      scores, ``rank / B`` (1 for the most realistic image of the batch, 1/B for the least). Relative, so it
      down-weights the less realistic images whatever the discriminator's scale or how far it has pulled away
      from the generator: Girardot et al.'s intent (weight by realism) without the absolute threshold that a
      winning discriminator pushes every fake below. Its mean is fixed, ``(B + 1) / 2B`` without ties.
    - ``real_rank``: the percentile of the image's score among the real batch's scores (a calibration against
      real images: 0.5 = as real-looking as the median real image). 0 for every image while the discriminator
      separates the two perfectly.
    - ``clipped_bce``: :func:`clipped_bce_realism` (absolute; the first definition).

    >>> fake = torch.tensor([-3.0, -1.0, -2.0, -1.0]).reshape(4, 1, 1, 1)
    >>> realism("batch_rank", fake).tolist()
    [0.25, 1.0, 0.5, 1.0]
    """
    if mode == "clipped_bce":
        return clipped_bce_realism(fake_logits)
    scores = image_scores(fake_logits)
    if mode == "batch_rank":
        return percentile(scores, scores)
    if mode == "real_rank":
        return percentile(scores, image_scores(real_logits))
    raise ValueError(f"unknown realism mode {mode!r}")


def schedule_factor(step: int, epoch_steps: int, alpha: float) -> float:
    """``alpha * log(t + 1)`` with ``t = step // epoch_steps`` the epoch (``step`` counted from the start of the
    segmenter's phase): 0 in the first epoch, then growing; times the realism it weights the synthetic loss.

    >>> schedule_factor(25, 10, 0.5) == 0.5 * math.log(3)
    True
    """
    return alpha * math.log(step // epoch_steps + 1)


class Pix2Pix(nn.Module):
    """Generator and discriminator for ``n_classes`` label maps in ``spatial_dims`` dimensions."""

    def __init__(self, spatial_dims: int, n_classes: int, noise_channels: int = 1,
                 generator_channels=(16, 32, 64), generator_res_units: int = 1, discriminator_channels: int = 32,
                 discriminator_layers: int = 2):
        from monai.networks.nets import PatchDiscriminator

        super().__init__()
        self.n_classes, self.noise_channels = n_classes, noise_channels
        self.stride = total_stride(generator_channels, None)
        self.generator = build_segmenter(spatial_dims, n_classes + noise_channels, 1, channels=generator_channels,
                                         num_res_units=generator_res_units, norm="instance", act="prelu")
        self.discriminator = PatchDiscriminator(spatial_dims=spatial_dims, channels=discriminator_channels,
                                                in_channels=n_classes + 1, num_layers_d=discriminator_layers,
                                                norm="INSTANCE")

    @classmethod
    def from_config(cls, config) -> Pix2Pix:
        """The GAN a training config describes (``config.gan``, ``config.data``)."""
        g = config.gan
        return cls(config.data.spatial_dims, config.data.n_classes, g.noise_channels, tuple(g.generator_channels),
                   g.generator_res_units, g.discriminator_channels, g.discriminator_layers)

    def generate(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Images (B, 1, *spatial) in [0, 1] for label maps (B, 1, *spatial) of class indices; the noise channels
        are drawn from ``generator``. Any size: the input is padded to the U-Net's stride and cropped back."""
        x = one_hot(labels, self.n_classes)
        if self.noise_channels:
            noise = draw_normal((x.shape[0], self.noise_channels, *x.shape[2:]), generator).to(x.device)
            x = torch.cat([x, noise], 1)
        return torch.sigmoid(padded_forward(self.generator, x, self.stride))

    def discriminate(self, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Patch logits (B, 1, *patches) that ``images`` are real images of ``labels``."""
        return self.discriminator(torch.cat([one_hot(labels, self.n_classes), images], 1))[-1]

    def scores(self, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """:func:`image_scores` of ``images`` given ``labels``, (B,): higher = more real-looking."""
        return image_scores(self.discriminate(labels, images))


class Pix2PixTrainer:
    """Adam optimizers of a :class:`Pix2Pix` and its training step (discriminator, then generator)."""

    def __init__(self, gan: Pix2Pix, lr: float = 2e-4, betas=(0.5, 0.999), l1_weight: float = 100.0):
        self.gan, self.l1_weight = gan, l1_weight
        self.adversarial = _adversarial_loss()
        self.opt_g = torch.optim.Adam(gan.generator.parameters(), lr=lr, betas=tuple(betas))
        self.opt_d = torch.optim.Adam(gan.discriminator.parameters(), lr=lr, betas=tuple(betas))

    def step(self, labels: torch.Tensor, images: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        """One pix2pix step on real pairs (labels (B, 1, *spatial), images (B, 1, *spatial) in [0, 1])."""
        gan, adv = self.gan, self.adversarial
        fake = gan.generate(labels, generator)
        loss_d = 0.5 * (adv(gan.discriminate(labels, images), target_is_real=True, for_discriminator=True)
                        + adv(gan.discriminate(labels, fake.detach()), target_is_real=False, for_discriminator=True))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        loss_adv = adv(gan.discriminate(labels, fake), target_is_real=True, for_discriminator=False)
        l1 = (fake - images).abs().mean()
        self.opt_g.zero_grad(set_to_none=True)
        (loss_adv + self.l1_weight * l1).backward(inputs=list(gan.generator.parameters()))
        self.opt_g.step()
        values = {"gan_loss_d": loss_d, "gan_loss_adv": loss_adv, "gan_l1": l1}
        return {k: float(v.detach()) for k, v in values.items()}

    def state_dict(self) -> dict:
        return {"gan": self.gan.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.gan.load_state_dict(state["gan"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
