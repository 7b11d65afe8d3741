"""Label-map generator (brainSPADE's first half): a KL autoencoder of one-hot label maps and a latent diffusion model.

Phase 1 (``ae_steps``) trains MONAI's ``AutoencoderKL`` on one-hot label maps: cross-entropy of the decoded
logits against the classes, a KL term on the latent, and (``adv_weight`` > 0) a hinge patch adversarial term on
the decoded class probabilities. Phase 2 (``diffusion_steps``) freezes it and trains MONAI's
``DiffusionModelUNet`` to predict the noise added to its latents (``DDPMScheduler`` through
``LatentDiffusionInferer``), the latents scaled to unit variance (``scale_factor``, measured on the first
diffusion batch, as in Rombach et al.). Sampling runs ``DDIMScheduler`` (deterministic, eta 0) from noise drawn
with the caller's generator, decodes the latents and takes the argmax: integer label maps 0..n_classes-1.
2D and 3D are one code path (``spatial_dims``); the defaults are CPU-sized (2D, 64 px, narrow networks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from monai.inferers import LatentDiffusionInferer
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from ..config import POSITIVE
from ..errors import ConfigError
from ..losses import one_hot
from ..rng import derive_seed
from .adversarial import PatchCritic
from .data import LabelSource
from .losses import kl_divergence


@dataclass
class LabelGenConfig:
    seed: int = 0
    spatial_dims: int = field(default=2, metadata={"range": (2, 3)})
    shape: list[int] = field(default_factory=lambda: [64, 64], metadata={"range": (8, None)})
    n_classes: int = field(default=6, metadata={"range": (2, None)})
    # label maps: "phantom", or a file / folder / glob read like data.labels (3D volumes sliced for 2D)
    labels: str = "phantom"
    label_mapping: str | None = None  # YAML mapping label values to classes 0..n_classes-1
    slice_axis: int = field(default=2, metadata={"range": (0, 2)})
    fit: Literal["resize", "crop"] = "resize"  # whole slices resized to shape, or random crops
    batch_size: int = field(default=8, metadata={"range": (1, None)})
    ae_steps: int = field(default=1500, metadata={"range": (0, None)})
    diffusion_steps: int = field(default=1500, metadata={"range": (0, None)})
    ae_channels: list[int] = field(default_factory=lambda: [16, 32, 32], metadata={"range": (1, None)})
    latent_channels: int = field(default=3, metadata={"range": (1, None)})
    ae_lr: float = field(default=1e-3, metadata=POSITIVE)
    kl_weight: float = field(default=1e-5, metadata={"range": (0, None)})
    adv_weight: float = field(default=0.0, metadata={"range": (0, None)})  # 0: no discriminator
    unet_channels: list[int] = field(default_factory=lambda: [32, 64], metadata={"range": (1, None)})
    attention: bool = True  # self-attention at the lowest resolution of the diffusion U-Net
    diffusion_lr: float = field(default=5e-4, metadata=POSITIVE)
    train_timesteps: int = field(default=1000, metadata={"range": (2, None)})
    sample_steps: int = field(default=50, metadata={"range": (1, None)})  # DDIM steps when sampling
    checkpoint_every: int = field(default=250, metadata={"range": (1, None)})
    log_every: int = field(default=25, metadata={"range": (1, None)})
    threads: int | None = None

    @property
    def steps(self) -> int:
        return self.ae_steps + self.diffusion_steps

    def validate(self):
        if len(self.shape) != self.spatial_dims:
            raise ConfigError("shape", f"needs {self.spatial_dims} sizes (spatial_dims), got {self.shape}")
        down = 2 ** (len(self.ae_channels) - 1) * 2 ** (len(self.unet_channels) - 1)
        if any(s % down for s in self.shape):
            raise ConfigError("shape", f"every size must divide by {down} (the autoencoder's and the diffusion "
                                       f"U-Net's downsampling), got {self.shape}")
        if self.labels == "phantom" and self.n_classes < 4:
            raise ConfigError("n_classes", f"phantoms have at least 4 labels, got {self.n_classes}")


def _groups(channels) -> int:
    """Group norm groups dividing every width (at most 8)."""
    return math.gcd(8, *channels)


class LabelGenerator(torch.nn.Module):
    """The two networks and the latent scale; :meth:`sample` makes label maps."""

    def __init__(self, config: LabelGenConfig):
        super().__init__()
        c = config
        self.config = c
        levels = len(c.ae_channels)
        self.autoencoder = AutoencoderKL(
            spatial_dims=c.spatial_dims, in_channels=c.n_classes, out_channels=c.n_classes, num_res_blocks=1,
            channels=tuple(c.ae_channels), attention_levels=(False,) * levels, latent_channels=c.latent_channels,
            norm_num_groups=_groups(c.ae_channels), with_encoder_nonlocal_attn=False,
            with_decoder_nonlocal_attn=False)
        unet_levels = len(c.unet_channels)
        self.unet = DiffusionModelUNet(
            spatial_dims=c.spatial_dims, in_channels=c.latent_channels, out_channels=c.latent_channels,
            num_res_blocks=1, channels=tuple(c.unet_channels),
            attention_levels=(False,) * (unet_levels - 1) + (c.attention,), norm_num_groups=_groups(c.unet_channels),
            num_head_channels=min(8, c.unet_channels[-1]))
        self.register_buffer("scale_factor", torch.ones(()))
        self.latent_shape = [s // 2 ** (levels - 1) for s in c.shape]

    def noise_scheduler(self) -> DDPMScheduler:
        return DDPMScheduler(num_train_timesteps=self.config.train_timesteps, schedule="scaled_linear_beta",
                             beta_start=0.0015, beta_end=0.0195)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, steps: int | None = None, soft: bool = False):
        """``n`` label maps (n, 1, *shape) int64 in 0..n_classes-1, or with ``soft`` the class probabilities
        (n, K, *shape) (partial-volume maps)."""
        c = self.config
        ddim = DDIMScheduler(num_train_timesteps=c.train_timesteps, schedule="scaled_linear_beta",
                             beta_start=0.0015, beta_end=0.0195, clip_sample=False)
        ddim.set_timesteps(steps or c.sample_steps)
        inferer = LatentDiffusionInferer(ddim, scale_factor=float(self.scale_factor))
        device = self.scale_factor.device
        noise = torch.randn((n, c.latent_channels, *self.latent_shape), generator=generator,
                            device=generator.device).to(device)
        logits = inferer.sample(noise, self.autoencoder, self.unet, scheduler=ddim, verbose=False)
        probs = logits.softmax(1)
        return probs if soft else probs.argmax(1, keepdim=True)


class LabelGenTraining:
    """The generator with its optimizers, optional critic, data and training stream; one :meth:`step` at a time.

    Every state a resume needs is in :meth:`state_dict` (networks, optimizers, critic, latent scale); the runner
    saves the training generator and the global RNGs beside it (MONAI's ``AutoencoderKL`` draws its latent sample
    from torch's global generator).
    """

    kind = "labelgen"

    def __init__(self, config: LabelGenConfig, source: LabelSource, device: torch.device | str = "cpu"):
        self.config, self.source, self.device = config, source, torch.device(device)
        torch.manual_seed(derive_seed(config.seed, "labelgen", "init"))
        self.model = LabelGenerator(config).to(self.device)
        self.ae_opt = torch.optim.Adam(self.model.autoencoder.parameters(), lr=config.ae_lr)
        self.unet_opt = torch.optim.Adam(self.model.unet.parameters(), lr=config.diffusion_lr)
        self.critic = None
        if config.adv_weight > 0:
            self.critic = PatchCritic(config.spatial_dims, config.n_classes, channels=16)
            self.critic.net.to(self.device)
        self.scheduler = self.model.noise_scheduler()
        self.generator = torch.Generator().manual_seed(derive_seed(config.seed, "labelgen", "train"))

    def step(self, step: int) -> dict[str, float]:
        labels = self.source.batch(self.config.batch_size, self.generator).to(self.device)
        x = one_hot(labels, self.config.n_classes)
        if step < self.config.ae_steps:
            return self.autoencoder_step(x, labels)
        return self.diffusion_step(x, first=step == self.config.ae_steps)

    def autoencoder_step(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        ae, c = self.model.autoencoder, self.config
        ae.train()
        logits, mu, sigma = ae(x)
        ce = F.cross_entropy(logits, labels[:, 0])
        kl = kl_divergence(mu, sigma)
        loss = ce + c.kl_weight * kl
        out = {"ae_ce": ce.item(), "ae_kl": kl.item()}
        if self.critic is not None:
            adv, _ = self.critic.generator_losses(x, logits.softmax(1))
            loss = loss + c.adv_weight * adv
            out["ae_adv"] = adv.item()
        self.ae_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.ae_opt.step()
        if self.critic is not None:
            out["ae_critic"] = self.critic.step(x, logits.softmax(1))
        return out

    def diffusion_step(self, x: torch.Tensor, first: bool = False) -> dict[str, float]:
        ae, unet = self.model.autoencoder, self.model.unet
        ae.eval()
        unet.train()
        if first:  # latents scaled to unit variance for the diffusion model (Rombach et al. 2022)
            with torch.no_grad():
                self.model.scale_factor.fill_(1.0 / ae.encode_stage_2_inputs(x).std().clamp_min(1e-6))
        inferer = LatentDiffusionInferer(self.scheduler, scale_factor=float(self.model.scale_factor))
        shape = (x.shape[0], self.config.latent_channels, *self.model.latent_shape)
        noise = torch.randn(shape, generator=self.generator).to(self.device)
        t = torch.randint(0, self.scheduler.num_train_timesteps, (x.shape[0],), generator=self.generator)
        predicted = inferer(x, autoencoder_model=ae, diffusion_model=unet, noise=noise, timesteps=t.to(self.device))
        loss = F.mse_loss(predicted, noise)
        self.unet_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.unet_opt.step()
        return {"diffusion_mse": loss.item()}

    def state_dict(self) -> dict:
        state = {"model": self.model.state_dict(), "ae_opt": self.ae_opt.state_dict(),
                 "unet_opt": self.unet_opt.state_dict()}
        if self.critic is not None:
            state["critic"] = self.critic.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ae_opt.load_state_dict(state["ae_opt"])
        self.unet_opt.load_state_dict(state["unet_opt"])
        if self.critic is not None:
            self.critic.load_state_dict(state["critic"])

    def gallery(self, path, n: int = 8) -> None:
        """Training label maps beside sampled ones (a fixed sampling seed: galleries of one run compare)."""
        from ..report import save_gallery

        g = torch.Generator().manual_seed(derive_seed(self.config.seed, "gallery"))
        real = self.source.batch(n, g)
        rows = {"training label maps": [m[0].float().numpy() for m in real]}
        if self.config.diffusion_steps:
            sampled = self.model.sample(n, g).cpu()
            rows["sampled label maps"] = [m[0].float().numpy() for m in sampled]
        save_gallery(path, rows)

