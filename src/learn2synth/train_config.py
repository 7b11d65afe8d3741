"""The training configuration schema: one tree of dataclasses from the YAML file and ``--set`` overrides.

``load_train_config("configs/learn2synth.yaml", ["optim.lr=1e-3"])`` gives a validated :class:`TrainConfig`;
the synthesis section starts from the preset named by ``synth_preset`` (see :mod:`learn2synth.synth.presets`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .config import FRACTION, NON_NEGATIVE, POSITIVE, from_dict, layered, merge, preset
from .errors import ConfigError
from .methods import METHODS, method_class
from .synth.pipeline import SynthConfig
from .synth.presets import PRESETS

MethodName = Literal[tuple(METHODS)]  # the registered methods' names


@dataclass
class PhantomRealConfig:
    """'Real' images made from held-out phantoms with a hidden corruption (the parameter-recovery setting)."""

    train_count: int = field(default=8, metadata={"range": (1, None)})
    test_count: int = field(default=32, metadata={"range": (1, None)})
    sigma: float = field(default=0.10, metadata=NON_NEGATIVE)
    sigma_range: list[float] | None = field(default=None, metadata=NON_NEGATIVE)  # [lo, hi]: per-image sigma
    bias: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5], metadata=NON_NEGATIVE)
    # a fixed intensity per label (one "modality", like a real scan); None: random contrast as in the synthesis
    contrast: list[float] | None = field(default=None, metadata=FRACTION)


@dataclass
class DataConfig:
    spatial_dims: int = field(default=2, metadata={"range": (2, 3)})
    shape: list[int] = field(default_factory=lambda: [64, 64], metadata={"range": (8, None)})
    n_classes: int = field(default=6, metadata={"range": (2, None)})
    class_names: list[str] | None = None  # one name per class, for tables (e.g. segment --vol)
    # label maps for synthesis: "phantom", a file / folder / glob, or "labelgen:RUN" (maps sampled from a trained
    # label generator, learn2synth labelgen train; phantom_count of them)
    # ("real" needs none: it defaults to None there)
    labels: str | None = "phantom"
    phantom_count: int = field(default=64, metadata={"range": (1, None)})
    # real labeled data: "phantom" (synthetic stand-in), a manifest (.yaml/.csv), a folder, or None
    real: str | None = "phantom"
    phantom_real: PhantomRealConfig = field(default_factory=PhantomRealConfig)
    # YAML file mapping the synthesis label maps' values to classes (and their intensity groups); labels only
    label_mapping: str | None = None
    # YAML file mapping the real labels' values to classes; None: real labels already hold classes 0..n_classes-1
    real_label_mapping: str | None = None
    # colour images (RGB fundus photographs...): "refuse", or turn them to grey by "luminance" or "green" channel
    # (the usual choice for retinal images); predict converts scans the same way
    colour: Literal["refuse", "luminance", "green"] = "refuse"
    slice_axis: int = field(default=2, metadata={"range": (0, 2)})
    # the space of the training volumes, recorded for inference: scans are reoriented (axis codes, e.g. "LIA")
    # and resampled (mm) to it before segmenting, and the results brought back; None leaves scans as they are
    orientation: str | None = None
    voxel_size: float | None = field(default=None, metadata=POSITIVE)
    val_fraction: float = field(default=0.25, metadata=FRACTION)

    def validate(self):
        if self.orientation is not None and not _is_axcodes(self.orientation):
            raise ConfigError("orientation", f"needs three axis codes, one of L/R, A/P, S/I each (e.g. 'LIA'), got "
                                             f"{self.orientation!r}")
        if self.class_names is not None and len(self.class_names) != self.n_classes:
            raise ConfigError("class_names", f"needs one name per class ({self.n_classes}), got "
                                             f"{len(self.class_names)}")
        if len(self.shape) != self.spatial_dims:
            raise ConfigError("shape", f"needs {self.spatial_dims} sizes (spatial_dims), got {self.shape}")
        if "phantom" in (self.labels, self.real) and self.n_classes < 4:
            raise ConfigError("n_classes", f"phantoms have at least 4 labels (background, CSF, cortex, white "
                                           f"matter), got {self.n_classes}")
        contrast, sigma_range = self.phantom_real.contrast, self.phantom_real.sigma_range
        if sigma_range is not None and not (len(sigma_range) == 2 and 0 < sigma_range[0] < sigma_range[1]):
            raise ConfigError("phantom_real.sigma_range", f"needs [lo, hi] with 0 < lo < hi, got {sigma_range}")
        if self.real == "phantom" and contrast is not None and len(contrast) != self.n_classes:
            raise ConfigError("phantom_real.contrast", f"needs one intensity per label ({self.n_classes}), got "
                                                            f"{len(contrast)}")


def _is_axcodes(codes: str) -> bool:
    pairs = [set("LR"), set("AP"), set("SI")]
    return len(codes) == 3 and all(sum(c.upper() in p for c in codes) == 1 for p in pairs)


@dataclass
class NetConfig:
    channels: list[int] = field(default_factory=lambda: [16, 32, 64], metadata={"range": (1, None)})
    strides: list[int] | None = None
    num_res_units: int = field(default=1, metadata=NON_NEGATIVE)
    norm: Literal["instance", "none"] = "instance"
    act: Literal["prelu", "relu", "leakyrelu", "elu", "gelu", "silu", "tanh"] = "gelu"
    dropout: float = field(default=0.0, metadata={"range": (0, 1), "open": "high"})


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = field(default=2e-3, metadata=POSITIVE)
    momentum: float = field(default=0.0, metadata={"range": (0, 1), "open": "high"})
    weight_decay: float = field(default=0.0, metadata=NON_NEGATIVE)
    # step decay of the segmenter's learning rate: lr * gamma ** (number of milestones <= step). A function of the
    # step alone, so a resumed run follows the same schedule as an uninterrupted one.
    milestones: list[int] = field(default_factory=list, metadata=NON_NEGATIVE)
    gamma: float = field(default=0.1, metadata=POSITIVE)

    def lr_at(self, step: int) -> float:
        """Learning rate of (0-based) ``step``.

        >>> OptimConfig(lr=1e-3, milestones=[100, 200]).lr_at(150)
        0.0001
        """
        return self.lr * self.gamma ** sum(step >= m for m in self.milestones)

    def options(self) -> dict:
        out = {"lr": self.lr, "weight_decay": self.weight_decay}
        if self.name == "sgd":
            out["momentum"] = self.momentum
        return out


@dataclass
class AugmenterConfig:
    # parametric: learned corruptions after the synthesis; residual: a U-Net; learned_priors: the synthesis's own
    # priors (learn2synth.augment.learned_priors)
    kind: Literal["parametric", "residual", "learned_priors"] = "parametric"
    # learned_priors: which priors are learned, e.g. [gmm.mean, gmm.std, noise.std, bias.std, gamma.std]
    # (None: those of that list whose effect is enabled)
    priors: list[str] | None = None
    # learned_priors: start the GMM ranges of brain-tissue intensity classes from the real training examples'
    # per-class intensities (LearnedPriorsAugmenter.fit_to_real), instead of the synthesis preset's
    fit_real: bool = False
    noise: Literal["sigma", "range", "none"] = "sigma"
    noise_init: list[float] = field(default_factory=lambda: [0.01], metadata=POSITIVE)
    # control points per axis of each bias-field scale. With instance norm (net.norm), the exponent of a 2-point
    # field is NOT identified: such a field is close to a global intensity scale that the normalization removes,
    # so its learned value says nothing about the real images (reports mark it, learn2synth.runlog.not_identified)
    bias_points: list[int] = field(default_factory=lambda: [2, 4, 8], metadata={"range": (2, None)})
    bias_init: list[float] = field(default_factory=lambda: [0.05], metadata=NON_NEGATIVE)
    gamma_init: float | None = None
    blur_init: float | None = None
    channels: list[int] = field(default_factory=lambda: [8, 16, 32])  # residual augmenter
    lr: float = field(default=0.02, metadata=POSITIVE)
    # the augmenter's learning rate falls by a cosine from lr (at the end of meta.warmup) to lr * lr_final (at the
    # last step); 1: constant. A noisy hypergradient makes the learned values wander around the objective's zero,
    # and lopsidedly where the push back is weaker on one side: the decay narrows that spread
    lr_final: float = field(default=1.0, metadata={"range": (0, 1), "open": "low"})
    # Adam's (beta1, beta2) for the augmenter; beta1 = 0 lets a noisy hypergradient move it without momentum
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata={"range": (0, 1), "open": "high"})
    # upper bounds of learned values by name, e.g. {noise.std: 0.2} (learned_priors: a prior; a range's hi) or
    # {noise.sigma: 0.2} (parametric: a logged learned value); kept by projection after each augmenter step
    max_values: dict[str, float] = field(default_factory=dict)
    # every check_every steps (0: never) the segmenter is scored (mean Dice) on the held-out real examples; if it
    # fell by more than check_tolerance since the last check, the augmenter and its optimizer go back to the
    # state of the last accepted check and the augmenter's learning rate is halved (learn2synth.methods.guard)
    check_every: int = field(default=0, metadata=NON_NEGATIVE)
    check_tolerance: float = field(default=0.01, metadata=NON_NEGATIVE)

    def validate(self):
        if len(self.betas) != 2:
            raise ConfigError("betas", f"needs two values (beta1, beta2), got {self.betas}")
        bad = {k: v for k, v in self.max_values.items() if not v > 0}
        if bad:
            raise ConfigError("max_values", f"bounds must be > 0, got {bad}")


@dataclass
class MetaConfig:
    # how the hypergradient is computed (learn2synth.meta.hypergrad): exact (second-order autograd), fd (central
    # differences, two perturbed synthetic passes) or fd_onesided (forward difference, one perturbed pass; cosine
    # similarity to exact >= 0.9999 on the meta-step benchmark). meta_every > 1 amortizes any mode.
    # Defaults (2026-12-07): fd_onesided, a meta-step every 4th step, debiased with the next step's gradient as
    # reference: a trainer step costs 1.5x a synthseg step (exact every step: 4.3x; benchmarks/results/
    # meta_step.md), and with the demo's augmenter settings the recovery study lands no worse on average than exact
    # mode, with a wider spread over seeds (benchmarks/results/paper_recovery_default_5seeds.md).
    mode: Literal["exact", "fd", "fd_onesided"] = "fd_onesided"
    alpha: float = field(default=1.0, metadata=POSITIVE)
    meta_every: int = field(default=4, metadata={"range": (1, None)})
    warmup: int = field(default=0, metadata=NON_NEGATIVE)  # plain synthetic steps before meta-learning
    fd_eps: float | None = None
    # subtract the loss of an independent synthetic batch at phi' from the real loss (gradient matching; see
    # learn2synth.meta.hypergrad._objective): the learned values then settle where synthesis matches real data
    debias: bool = True
    # where debias's reference gradient comes from: an extra synthetic batch (one more forward/backward per
    # meta-step), or the next step's own synthetic batch, which it computes at phi' anyway ("next": no extra pass;
    # fd modes only; the augmenter's update then lands one step later); "auto": next in the fd modes, extra in exact
    debias_reference: Literal["auto", "extra", "next"] = "auto"

    def validate(self):
        if self.debias and self.debias_reference == "next" and self.mode == "exact":
            raise ConfigError("debias_reference", "next needs meta.mode fd or fd_onesided (the exact mode's "
                                                  "second-order graph cannot wait for the next step)")

    @property
    def deferred_reference(self) -> bool:
        """Whether debias takes the next step's synthetic gradient as its reference (no extra pass)."""
        return self.debias and (self.debias_reference == "next" or
                                (self.debias_reference == "auto" and self.mode != "exact"))


@dataclass
class GanConfig:
    """``method: gan_synth`` (learn2synth.methods.gan_synth): a pix2pix label-to-image GAN trained on the real pairs,
    and the segmenter trained on real + GAN-synthetic pairs with a progressive realism weight."""

    # phase 1: this many steps train the GAN only (the segmenter is not updated); phase 2 trains the segmenter
    pretrain_steps: int = field(default=500, metadata=NON_NEGATIVE)
    # phase 2: also keep training the GAN (one GAN step per segmenter step); off by default (see the method)
    keep_training: bool = False
    # an "epoch" of the weight schedule: this many phase-2 steps; epoch t weights the synthetic loss by
    # alpha * log(t + 1) * realism, so the first epoch of phase 2 (t = 0) trains on the real pairs alone
    epoch_steps: int = field(default=100, metadata={"range": (1, None)})
    alpha: float = field(default=0.5, metadata=NON_NEGATIVE)
    # false: weight alpha * log(t + 1) alone, without the realism score (an ablation of the realism gate)
    realism_weight: bool = True
    # the realism in [0, 1] of a synthetic image (learn2synth.generative.pix2pix.realism): its rank among the
    # synthetic batch by discriminator score, its rank among the real batch's scores, or 1 - min(BCE vs real, 1)
    realism: Literal["batch_rank", "real_rank", "clipped_bce"] = "batch_rank"
    noise_channels: int = field(default=1, metadata=NON_NEGATIVE)  # generator input: one-hot labels + noise
    generator_channels: list[int] = field(default_factory=lambda: [16, 32, 64], metadata={"range": (1, None)})
    generator_res_units: int = field(default=1, metadata=NON_NEGATIVE)
    discriminator_channels: int = field(default=32, metadata={"range": (1, None)})
    discriminator_layers: int = field(default=2, metadata={"range": (1, None)})
    l1_weight: float = field(default=100.0, metadata=NON_NEGATIVE)  # pix2pix: adversarial + 100 * L1
    lr: float = field(default=2e-4, metadata=POSITIVE)
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999], metadata={"range": (0, 1), "open": "high"})
    # mask composition (learn2synth.generative.compose): flip probability of the first axis, random affine and
    # elastic deformation, and the probability of pasting one structure from another map of the batch
    flip: float = field(default=0.5, metadata=FRACTION)
    rotation: float = field(default=10.0, metadata=NON_NEGATIVE)
    scaling: float = field(default=0.1, metadata={"range": (0, 1), "open": "high"})
    elastic_std: float = field(default=3.0, metadata=NON_NEGATIVE)
    paste: float = field(default=0.5, metadata=FRACTION)

    def validate(self):
        if len(self.betas) != 2:
            raise ConfigError("betas", f"needs two values (beta1, beta2), got {self.betas}")
        if len(self.generator_channels) < 2:
            raise ConfigError("generator_channels", f"needs at least two levels, got {self.generator_channels}")


@dataclass
class FeatureDAConfig:
    """Method feature_da (learn2synth.methods.feature_da): the generator G, the patch discriminator D, and the
    weights of each update's terms."""

    # unlabeled target images (file, folder or glob; normalized and sliced like data.real); None: the images of
    # data.real's training examples, whose labels are then not used
    target: str | None = None
    # the labeled source domain: "synth" (images synthesized from data.labels) or "real" (data.real's examples,
    # with feature_da.target as the target domain)
    source: Literal["synth", "real"] = "synth"
    g_channels: int = field(default=32, metadata={"range": (1, None)})  # G's width
    noise_channels: int = field(default=1, metadata=NON_NEGATIVE)  # N(0, 1) channels beside F's features for G
    d_channels: int = field(default=16, metadata={"range": (1, None)})  # D's first layer (doubled per layer)
    d_layers: int = field(default=3, metadata={"range": (1, None)})  # D's down-sampling layers (patch size)
    lr_g: float = field(default=2e-4, metadata=POSITIVE)
    lr_d: float = field(default=2e-4, metadata=POSITIVE)
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999], metadata={"range": (0, 1), "open": "high"})
    rec_weight: float = field(default=1.0, metadata=NON_NEGATIVE)  # G: L1 reconstruction of both domains
    adv_weight_g: float = field(default=1.0, metadata=NON_NEGATIVE)  # G: fakes as the reals of their domain
    aux_weight_g: float = field(default=1.0, metadata=NON_NEGATIVE)  # G: classes of source-fake patches
    aux_weight_d: float = field(default=1.0, metadata=NON_NEGATIVE)  # D: classes of source-real patches
    adv_weight_f: float = field(default=0.1, metadata=NON_NEGATIVE)  # F: fakes as the reals of the other domain
    aux_weight_f: float = field(default=0.1, metadata=NON_NEGATIVE)  # F: classes of source-fake patches
    adapt_from: int = field(default=0, metadata=NON_NEGATIVE)  # F trains on segmentation alone before this step

    def validate(self):
        if len(self.betas) != 2:
            raise ConfigError("betas", f"needs two values (beta1, beta2), got {self.betas}")


@dataclass
class SpadeMethodConfig:
    """Method ``spade``: images rendered from the label maps by a trained SPADE generator."""

    model: str | None = None  # run folder or checkpoint of `learn2synth spade train`
    style: list[str] = field(default_factory=list)  # style images, one drawn per item; empty: codes from N(0, 1)


@dataclass
class TrainConfig:
    method: MethodName = "learn2synth"
    seed: int = 0
    steps: int = field(default=1000, metadata={"range": (1, None)})
    batch_size: int = field(default=8, metadata={"range": (1, None)})
    real_batch_size: int = field(default=8, metadata={"range": (1, None)})
    loss: Literal["dice", "ce", "dice_ce", "logit_mse"] = "dice_ce"
    device: str = "auto"
    threads: int | None = None
    mixed_fraction: float = field(default=0.25, metadata=FRACTION)  # share of real items in a mixed batch
    finetune_from: float = field(default=0.7, metadata=FRACTION)  # fraction of steps before fine-tuning on real
    synth_preset: str = "none"
    # a checkpoint file or run folder whose segmenter weights every method starts from (parameters only; the
    # optimizer starts fresh); the network this config describes must match it
    init_from: str | None = None
    synth: SynthConfig = field(default_factory=SynthConfig)
    data: DataConfig = field(default_factory=DataConfig)
    net: NetConfig = field(default_factory=NetConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augmenter: AugmenterConfig = field(default_factory=AugmenterConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    feature_da: FeatureDAConfig = field(default_factory=FeatureDAConfig)
    spade: SpadeMethodConfig = field(default_factory=SpadeMethodConfig)
    log_every: int = field(default=10, metadata={"range": (1, None)})
    val_every: int = field(default=100, metadata={"range": (1, None)})
    checkpoint_every: int = field(default=100, metadata={"range": (1, None)})
    # also checkpoint when this many minutes passed since the last one, whatever checkpoint_every says
    checkpoint_minutes: float = field(default=10.0, metadata=POSITIVE)
    keep_checkpoints: int = field(default=2, metadata={"range": (1, None)})
    max_skipped: int = field(default=20, metadata={"range": (1, None)})  # consecutive non-finite updates allowed

    def validate(self):
        preset(PRESETS, self.synth_preset, "synth_preset")  # refuses an unknown name
        method = method_class(self.method)
        if method.uses_real and self.data.real is None:
            raise ConfigError("data.real", f"method {self.method!r} needs real labeled data")
        if method.synthesizes and self.data.labels is None:
            raise ConfigError("data.labels", f"method {self.method!r} synthesizes images: it needs label maps")


def load_train_config(path=None, sets=(), base: dict | None = None) -> TrainConfig:
    """Defaults < synth preset < ``base`` < YAML file < ``sets``; every mistake names its key or file."""
    data = layered(path, list(sets), base)
    name = data.get("method", TrainConfig.method)
    if name in METHODS and not method_class(name).synthesizes and "labels" not in (data.get("data") or {}):
        data = merge(data, {"data": {"labels": None}})  # a method that synthesizes nothing needs no label maps
    synth = merge(preset(PRESETS, data.get("synth_preset", TrainConfig.synth_preset), "synth_preset"),
                  data.get("synth") or {})
    return from_dict(TrainConfig, {**data, "synth": synth})
