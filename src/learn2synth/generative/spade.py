"""Image generator (brainSPADE's second half): MONAI's ``SPADENet`` in VAE mode, its encoder the style encoder.

A training item is a content label map with its image and a style image: another slice of the same volume (or
another phantom with the same contrast draw, :class:`~.data.PairSource`), so the style code can carry the
contrast but not the content. The generator minimizes

    adv_weight * hinge adversarial (PatchDiscriminator on image + one-hot labels, MONAI PatchAdversarialLoss)
    + fm_weight * discriminator feature matching + l1_weight * L1 to the content image
    + kl_weight * KL(style code || N(0, 1)) + style_weight * contrastive style loss

where the style loss (:func:`~.losses.style_contrastive_loss`) asks the code of each style image and of a randomly
intensity-transformed copy (:func:`~.losses.style_transform`) to agree, and to differ from other images' codes.
No perceptual loss: MONAI's needs downloaded weights, which cannot be fetched here (feature matching stands in).

``SPADENet`` traps handled here: its input shape is fixed (the encoder and decoder have linear layers sized to
it) and every size must divide by 2 ** len(channels); it reverses and extends the ``channels`` list it is given
(a copy is passed); ``SPADENet.encode`` and a decode without ``z`` draw from torch's global generator, so the
reparameterization is done here with the run's generator instead. Output: a sigmoid, images in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from monai.networks.nets import SPADENet

from ..config import NON_NEGATIVE, POSITIVE
from ..errors import ConfigError
from ..losses import one_hot
from ..rng import derive_seed
from .adversarial import PatchCritic
from .data import PairSource
from .losses import kl_divergence, style_contrastive_loss, style_transform


@dataclass
class SpadeConfig:
    seed: int = 0
    spatial_dims: int = field(default=2, metadata={"range": (2, 3)})
    shape: list[int] = field(default_factory=lambda: [64, 64], metadata={"range": (8, None)})
    n_classes: int = field(default=6, metadata={"range": (2, None)})
    # (image, label) volumes: "phantom", or a folder with images/ and labels/ or a manifest (as data.real)
    data: str = "phantom"
    label_mapping: str | None = None  # YAML mapping the labels' values to classes 0..n_classes-1
    slice_axis: int = field(default=2, metadata={"range": (0, 2)})
    normalize: Literal["minmax", "quantile"] = "quantile"  # per image, like the segmentation data
    fit: Literal["resize", "crop"] = "resize"
    batch_size: int = field(default=8, metadata={"range": (2, None)})  # >= 2: the style loss contrasts items
    steps: int = field(default=2000, metadata={"range": (1, None)})
    channels: list[int] = field(default_factory=lambda: [16, 32, 64], metadata={"range": (1, None)})
    z_dim: int = field(default=16, metadata={"range": (1, None)})
    spade_channels: int = field(default=32, metadata={"range": (1, None)})  # hidden width of each SPADE block
    critic_channels: int = field(default=16, metadata={"range": (1, None)})
    lr: float = field(default=2e-4, metadata=POSITIVE)
    critic_lr: float = field(default=2e-4, metadata=POSITIVE)
    adv_weight: float = field(default=1.0, metadata=NON_NEGATIVE)
    fm_weight: float = field(default=10.0, metadata=NON_NEGATIVE)
    l1_weight: float = field(default=10.0, metadata=NON_NEGATIVE)
    kl_weight: float = field(default=0.05, metadata=NON_NEGATIVE)
    style_weight: float = field(default=1.0, metadata=NON_NEGATIVE)
    temperature: float = field(default=0.1, metadata=POSITIVE)
    checkpoint_every: int = field(default=250, metadata={"range": (1, None)})
    log_every: int = field(default=25, metadata={"range": (1, None)})
    threads: int | None = None

    def validate(self):
        if len(self.shape) != self.spatial_dims:
            raise ConfigError("shape", f"needs {self.spatial_dims} sizes (spatial_dims), got {self.shape}")
        down = 2 ** len(self.channels)
        if any(s % down for s in self.shape):
            raise ConfigError("shape", f"SPADENet needs every size to divide by 2 ** len(channels) = {down}, got "
                                       f"{self.shape}")
        if self.data == "phantom" and self.n_classes < 4:
            raise ConfigError("n_classes", f"phantoms have at least 4 labels, got {self.n_classes}")


class SpadeGenerator(torch.nn.Module):
    """SPADENet (VAE) built for ``config.shape``; :meth:`render` turns label maps and a style into images."""

    def __init__(self, config: SpadeConfig):
        super().__init__()
        c = self.config = config
        self.net = SPADENet(spatial_dims=c.spatial_dims, in_channels=1, out_channels=1, label_nc=c.n_classes,
                            input_shape=list(c.shape), channels=list(c.channels),  # a copy: SPADENet mutates it
                            z_dim=c.z_dim, is_vae=True, spade_intermediate_channels=c.spade_channels,
                            last_act="SIGMOID")

    def style(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of the style code of images (B, 1, *shape)."""
        return self.net.encoder(image)

    def decode(self, labels: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, *shape) in [0, 1] from label maps (B, 1, *shape) of classes and style codes (B, Z)."""
        return self.net.decode(one_hot(labels, self.config.n_classes), z)

    @torch.no_grad()
    def render(self, labels: torch.Tensor, style: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Render label maps in the style of ``style`` images (one, or one per map; the code's mean is used) or,
        without, of style codes drawn from N(0, 1) with ``generator``."""
        if style is not None:
            z = self.style(style)[0].expand(labels.shape[0], -1)
        else:
            z = torch.randn(labels.shape[0], self.config.z_dim, generator=generator).to(labels.device)
        return self.decode(labels, z)


class SpadeTraining:
    """The generator, its critic, both optimizers, the pair source and the training stream."""

    kind = "spade"

    def __init__(self, config: SpadeConfig, source: PairSource, device: torch.device | str = "cpu"):
        self.config, self.source, self.device = config, source, torch.device(device)
        torch.manual_seed(derive_seed(config.seed, "spade", "init"))
        self.model = SpadeGenerator(config).to(self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=(0.5, 0.999))
        self.critic = PatchCritic(config.spatial_dims, 1 + config.n_classes, channels=config.critic_channels,
                                  lr=config.critic_lr)
        self.critic.net.to(self.device)
        self.generator = torch.Generator().manual_seed(derive_seed(config.seed, "spade", "train"))

    def step(self, step: int) -> dict[str, float]:
        c, g = self.config, self.generator
        image, labels, style = (t.to(self.device) for t in self.source.batch(c.batch_size, g))
        mu, logvar = self.model.style(style)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=g).to(self.device)
        fake = self.model.decode(labels, z)
        seg = one_hot(labels, c.n_classes)
        real_in, fake_in = torch.cat([image, seg], 1), torch.cat([fake, seg], 1)
        adv, fm = self.critic.generator_losses(real_in, fake_in)
        l1 = F.l1_loss(fake, image)
        kl = kl_divergence(mu, torch.exp(0.5 * logvar))
        mu_t, _ = self.model.style(style_transform(style, g))
        style_loss = style_contrastive_loss(mu, mu_t, c.temperature)
        loss = c.adv_weight * adv + c.fm_weight * fm + c.l1_weight * l1 + c.kl_weight * kl + c.style_weight * style_loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        critic = self.critic.step(real_in, fake_in)
        return {"g_adv": adv.item(), "g_fm": fm.item(), "g_l1": l1.item(), "g_kl": kl.item(),
                "g_style": style_loss.item(), "d_hinge": critic}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "critic": self.critic.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.critic.load_state_dict(state["critic"])

    def gallery(self, path, n: int = 6) -> None:
        """Rows: content images, their rendering in their own volume's style, one label map in the styles of the
        first images (the paper's gallery: one content, several contrasts)."""
        from ..report import save_gallery

        g = torch.Generator().manual_seed(derive_seed(self.config.seed, "gallery"))
        image, labels, style = self.source.batch(n, g)
        with torch.no_grad():
            z = self.model.style(style.to(self.device))[0]
            own = self.model.decode(labels.to(self.device), z).cpu()
            one = self.model.decode(labels[:1].expand(n, *labels.shape[1:]).to(self.device), z).cpu()
        arrays = {"real content": image, "style image": style, "rendered in that style": own,
                  "label map 1 in each style": one}
        save_gallery(path, {k: [a[0].numpy() for a in v] for k, v in arrays.items()})
