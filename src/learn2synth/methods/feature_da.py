"""Feature-level adversarial domain adaptation (Sankaranarayanan et al., "Learning from synthetic data:
addressing domain shift for semantic segmentation", CVPR 2018, https://arxiv.org/abs/1711.06969).

The segmenter (the MONAI U-Net of :func:`learn2synth.nets.build_net`, unchanged, so ``predict`` uses the model
like any other) is split before its last block: the embedding F is every block but the last (its output is the
concatenation of the top encoder features and the decoded features, at the resolution of the first stride), the
pixel classifier C is the last up-sampling block. A generator G (MONAI blocks) reconstructs an image from F's
features (plus a noise channel), and a MONAI ``PatchDiscriminator`` D gives per patch 4 domain logits
(source-real, source-fake, target-real, target-fake) and ``n_classes`` auxiliary class logits.

Source images are synthesized from label maps (as in method synthseg; ``feature_da.source: real`` takes data.real's
labeled examples instead); target images are the unlabeled images of ``feature_da.target``, or by default the
images of data.real's training examples, whose labels are left behind (the target pool holds images only) and never
reach a loss. Each step updates, in the paper's order:

- D: the four streams toward their own index (:data:`D_TARGETS`) + the auxiliary classes of source-real patches;
- G: L1 reconstruction of both domains + source-fake as source-real, target-fake as target-real
  (:data:`G_TARGETS`) + the auxiliary classes of source-fake patches;
- F and C: segmentation of the source, and (from step ``feature_da.adapt_from``) F through G and D: source-fake
  as target-real, target-fake as source-real (:data:`F_TARGETS`) + the auxiliary classes of source-fake patches.
  C gets only the segmentation gradient (the other terms do not depend on it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..data import ImagePool, load_image_pool
from ..errors import ConfigError
from ..losses import one_hot
from .base import Method

#: index of each stream in the discriminator's 4-way domain output
SOURCE_REAL, SOURCE_FAKE, TARGET_REAL, TARGET_FAKE = range(4)
#: the index each stream is trained toward, per update
D_TARGETS = {"source_real": SOURCE_REAL, "source_fake": SOURCE_FAKE, "target_real": TARGET_REAL,
             "target_fake": TARGET_FAKE}
G_TARGETS = {"source_fake": SOURCE_REAL, "target_fake": TARGET_REAL}
F_TARGETS = {"source_fake": TARGET_REAL, "target_fake": SOURCE_REAL}


def domain_losses(logits: dict[str, Tensor], targets: dict[str, int]) -> dict[str, Tensor]:
    """Cross-entropy of each stream's domain logits ``(B, 4, *patches)`` toward its index in ``targets`` (every
    patch of the stream has the same target); one scalar per stream of ``targets``."""
    out = {}
    for stream, index in targets.items():
        x = logits[stream]
        out[stream] = F.cross_entropy(x, torch.full((x.shape[0], *x.shape[2:]), index, device=x.device))
    return out


def patch_classes(labels: Tensor, size, n_classes: int) -> Tensor:
    """The share of each class in each patch: ``(B, 1, *spatial)`` labels area-averaged to ``(B, n_classes,
    *size)`` (the soft target of the auxiliary class head, at the discriminator's output resolution)."""
    return F.interpolate(one_hot(labels, n_classes), size=tuple(size), mode="area")


def auxiliary_loss(class_logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of the discriminator's class logits ``(B, K, *patches)`` with the class shares of the
    patches (:func:`patch_classes`)."""
    return F.cross_entropy(class_logits, patch_classes(labels, class_logits.shape[2:], class_logits.shape[1]))


def split_segmenter(net: nn.Module) -> tuple[nn.Module, nn.Module, str]:
    """(F, C, prefix) of a MONAI U-Net: F runs every block of ``net.model`` but the last, C the last; they share
    ``net``'s modules, and C's parameters are those of ``net`` whose name starts with ``prefix``."""
    blocks = list(net.model.children())
    return nn.Sequential(*blocks[:-1]), blocks[-1], f"model.{len(blocks) - 1}."


def build_image_generator(spatial_dims: int, in_channels: int, channels: int, stride: int, act: str) -> nn.Module:
    """G: features ``(B, in_channels, *spatial / stride)`` -> image ``(B, 1, *spatial)``; a residual unit, a
    transposed convolution by ``stride`` (as the U-Net's own up-sampling) and a 1-channel output convolution."""
    from monai.networks.blocks import Convolution, ResidualUnit

    norm = ("instance", {"affine": False, "track_running_stats": False})
    act = "swish" if act == "silu" else act
    return nn.Sequential(
        ResidualUnit(spatial_dims, in_channels, channels, act=act, norm=norm),
        Convolution(spatial_dims, channels, channels, strides=stride, is_transposed=True, act=act, norm=norm),
        Convolution(spatial_dims, channels, 1, conv_only=True),
    )


def build_discriminator(spatial_dims: int, channels: int, layers: int, n_classes: int) -> nn.Module:
    """D: MONAI's PatchDiscriminator with 4 domain + ``n_classes`` class outputs per patch; instance norm (batch
    norm's running statistics would change with every evaluation)."""
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(spatial_dims, channels, in_channels=1, out_channels=4 + n_classes, num_layers_d=layers,
                              norm=("instance", {"affine": False, "track_running_stats": False}),
                              last_conv_kernel_size=1)


def patch_grid(size: int, layers: int) -> int:
    """Patches per axis of :func:`build_discriminator` on ``size`` voxels: ``layers`` halvings (kernel 4,
    padding 1), then the stride-1 layer loses one."""
    return size // 2**layers - 1


class FeatureDA(Method):
    """The segmenter (F and C), the image generator G and the discriminator D, each of G and D with its Adam,
    and the target images."""

    uses_real = False  # the target images come from feature_da.target or data.real, checked below

    def __init__(self, config, data, generator, device, reduce=None):
        super().__init__(config, data, generator, device, reduce)
        cfg, d = config.feature_da, config.data
        if cfg.source == "real" and (data.real is None or cfg.target is None):
            raise ConfigError("feature_da.source", "'real' needs labeled source examples (data.real) and the target "
                                                   "domain's images (feature_da.target)")
        if cfg.target is not None:
            self.target = load_image_pool(cfg.target, d.spatial_dims, d.slice_axis, config.synth.normalize, d.colour)
        elif data.real is not None:
            self.target = ImagePool(data.real.images)  # images only: the labels stay behind
        else:
            raise ConfigError("feature_da.target", "needs unlabeled target images: set it or data.real")
        if patch_grid(min(d.shape), cfg.d_layers) < 2:
            raise ConfigError("feature_da.d_layers", f"{cfg.d_layers} layers leave fewer than 2x2 patches of a "
                                                     f"{d.shape} crop; use fewer layers or a larger data.shape")
        self.embed_net, self.classify_net, self.c_prefix = split_segmenter(self.net)
        self.stride = config.net.strides[0] if config.net.strides else 2  # F's features: the input / stride
        features = next(m.in_channels for m in self.classify_net.modules() if hasattr(m, "in_channels"))
        self.image_generator = build_image_generator(d.spatial_dims, features + cfg.noise_channels, cfg.g_channels,
                                                     self.stride, config.net.act).to(device)
        self.discriminator = build_discriminator(d.spatial_dims, cfg.d_channels, cfg.d_layers, d.n_classes).to(device)
        betas = tuple(cfg.betas)
        self.g_opt = torch.optim.Adam(self.image_generator.parameters(), lr=cfg.lr_g, betas=betas)
        self.d_opt = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_d, betas=betas)

    # the two halves of the segmenter, evaluated at a parameter dict of the whole network
    def embed(self, params: dict, x: Tensor) -> Tensor:
        own = {k.removeprefix("model."): v for k, v in params.items() if not k.startswith(self.c_prefix)}
        return functional_call(self.embed_net, own, (x,))

    def classify(self, params: dict, features: Tensor) -> Tensor:
        own = {k.removeprefix(self.c_prefix): v for k, v in params.items() if k.startswith(self.c_prefix)}
        return functional_call(self.classify_net, own, (features,))

    def generate(self, features: Tensor, noise: Tensor) -> Tensor:
        return self.image_generator(torch.cat([features, noise], 1))

    def discriminate(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(domain logits ``(B, 4, *patches)``, class logits ``(B, n_classes, *patches)``)."""
        out = self.discriminator(images)[-1]
        return out[:, :4], out[:, 4:]

    def noise(self, x: Tensor) -> Tensor:
        """G's noise input for the images ``x``: N(0, 1) at the features' resolution, from the run's stream."""
        shape = (x.shape[0], self.config.feature_da.noise_channels, *(s // self.stride for s in x.shape[2:]))
        return torch.randn(shape, generator=self.generator, device=x.device)

    def reconstruction_loss(self, params: dict, x: Tensor, noise: Tensor) -> Tensor:
        """L1 between ``x`` and G(F(x)); differentiable in F's ``params`` and in G."""
        return F.l1_loss(self.generate(self.embed(params, x), noise), x)

    def step(self, step: int) -> dict:
        cfg = self.config.feature_da
        xs, ys = self.synth_batch() if cfg.source == "synth" else self.real_batch(augment=True)
        xt = self.target.batch(self.config.real_batch_size, self.config.data.shape, self.generator).to(self.device)
        zs, zt = self.noise(xs), self.noise(xt)
        with torch.no_grad():
            fs, ft = self.embed(self.params, xs), self.embed(self.params, xt)
            gs, gt = self.generate(fs, zs), self.generate(ft, zt)
        # D: four streams toward their own index, auxiliary classes of the source images
        (ds, cs), (dsf, _), (dt, _), (dtf, _) = map(self.discriminate, (xs, gs, xt, gt))
        streams = {"source_real": ds, "source_fake": dsf, "target_real": dt, "target_fake": dtf}
        loss_d = sum(domain_losses(streams, D_TARGETS).values()) + cfg.aux_weight_d * auxiliary_loss(cs, ys)
        self.module_step(self.d_opt, self.discriminator, loss_d)
        # G: reconstruction, fakes as the real images of their own domain, auxiliary classes of source fakes
        gs, gt = self.generate(fs, zs), self.generate(ft, zt)
        (dsf, csf), (dtf, _) = self.discriminate(gs), self.discriminate(gt)
        rec = F.l1_loss(gs, xs) + F.l1_loss(gt, xt)
        adv_g = sum(domain_losses({"source_fake": dsf, "target_fake": dtf}, G_TARGETS).values())
        loss_g = cfg.rec_weight * rec + cfg.adv_weight_g * adv_g + cfg.aux_weight_g * auxiliary_loss(csf, ys)
        self.module_step(self.g_opt, self.image_generator, loss_g)
        # F and C: segmentation of the source; F also through G and D, each domain's fakes toward the other's reals
        parts = {}

        def loss(params):
            features = self.embed(params, xs)
            seg = self.loss_fn(self.classify(params, features), ys)
            parts["loss_seg"] = float(seg.detach())
            if step < cfg.adapt_from:
                return seg
            (dsf, csf) = self.discriminate(self.generate(features, zs))
            (dtf, _) = self.discriminate(self.generate(self.embed(params, xt), zt))
            adv = sum(domain_losses({"source_fake": dsf, "target_fake": dtf}, F_TARGETS).values())
            aux = auxiliary_loss(csf, ys)
            parts.update(loss_adv_f=float(adv.detach()), loss_aux_f=float(aux.detach()))
            return seg + cfg.adv_weight_f * adv + cfg.aux_weight_f * aux

        self.update_on(loss)
        return {**parts, "loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach()),
                "loss_rec": float(rec.detach())}

    def module_step(self, opt: torch.optim.Optimizer, module: nn.Module, loss: Tensor) -> None:
        """One step of ``module`` on ``loss`` alone (gradients by ``autograd.grad``, so nothing accumulates in the
        other networks; averaged over processes like the segmenter's); a non-finite loss or gradient is not
        applied."""
        params = list(module.parameters())
        grads = torch.autograd.grad(loss, params)
        if self.reduce is not None:
            grads = self.reduce(list(grads))
        if not math.isfinite(float(loss.detach())) or not all(torch.isfinite(g).all() for g in grads):
            return
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()
        opt.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "image_generator": self.image_generator.state_dict(),
                "discriminator": self.discriminator.state_dict(), "g_opt": self.g_opt.state_dict(),
                "d_opt": self.d_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.image_generator.load_state_dict(state["image_generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.g_opt.load_state_dict(state["g_opt"])
        self.d_opt.load_state_dict(state["d_opt"])
