"""A patch critic: MONAI's ``PatchDiscriminator`` with its own Adam optimizer and MONAI's ``PatchAdversarialLoss``.

Shared by both generators: the label autoencoder's optional adversarial term and SPADE's hinge GAN loss with
discriminator feature matching (the features are the discriminator's intermediate outputs, which
``PatchDiscriminator`` returns as a list whose last entry is the patch logits).
"""

from __future__ import annotations

import torch
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import PatchDiscriminator


class PatchCritic:
    """``in_channels`` is what the discriminator sees (SPADE: image and one-hot label map, concatenated)."""

    def __init__(self, spatial_dims: int, in_channels: int, channels: int = 16, layers: int = 2, lr: float = 2e-4,
                 criterion: str = "hinge"):
        self.net = PatchDiscriminator(spatial_dims=spatial_dims, channels=channels, in_channels=in_channels,
                                      out_channels=1, num_layers_d=layers, norm="INSTANCE")
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr, betas=(0.5, 0.999))
        self.loss = PatchAdversarialLoss(criterion=criterion)

    def step(self, real: torch.Tensor, fake: torch.Tensor) -> float:
        """One discriminator update on real vs (detached) fake inputs; returns its loss."""
        self.opt.zero_grad(set_to_none=True)
        loss = 0.5 * (self.loss(self.net(fake.detach())[-1], target_is_real=False, for_discriminator=True)
                      + self.loss(self.net(real)[-1], target_is_real=True, for_discriminator=True))
        loss.backward()
        self.opt.step()
        return loss.item()

    def generator_losses(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(adversarial loss of ``fake`` for the generator, feature matching: mean L1 distance between the
        discriminator's intermediate features of ``fake`` and of ``real``, the latter held fixed)."""
        fake_feats = self.net(fake)
        with torch.no_grad():
            real_feats = self.net(real)
        adv = self.loss(fake_feats[-1], target_is_real=True, for_discriminator=False)
        fm = sum(torch.nn.functional.l1_loss(f, r) for f, r in zip(fake_feats[:-1], real_feats[:-1], strict=True))
        return adv, fm / max(len(fake_feats) - 1, 1)

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
