"""The learned generators: label-map autoencoder + latent diffusion, SPADE with a style encoder (2D and 3D)."""

import math

import pytest
import torch

from learn2synth.generative.data import LabelSource, PairSource, fit_label
from learn2synth.generative.labelgen import LabelGenConfig, LabelGenTraining
from learn2synth.generative.losses import kl_divergence, style_contrastive_loss, style_transform
from learn2synth.generative.spade import SpadeConfig, SpadeTraining
from learn2synth.losses import one_hot

SHAPES = [(32, 32), (16, 16, 16)]


def labelgen(shape, **kw):
    settings = dict(spatial_dims=len(shape), shape=list(shape), n_classes=5, batch_size=2, ae_steps=2,
                    diffusion_steps=2, ae_channels=[4, 8], unet_channels=[8, 8], latent_channels=2,
                    train_timesteps=20, sample_steps=3)
    config = LabelGenConfig(**{**settings, **kw})
    config.validate()
    return LabelGenTraining(config, LabelSource(None, shape, config.n_classes))


def spade(shape, **kw):
    settings = dict(spatial_dims=len(shape), shape=list(shape), n_classes=5, batch_size=2, channels=[4, 8],
                    z_dim=4, spade_channels=4, critic_channels=4)
    config = SpadeConfig(**{**settings, **kw})
    config.validate()
    return SpadeTraining(config, PairSource(None, shape, config.n_classes))


@pytest.mark.parametrize("shape", SHAPES)
def test_label_generator_shapes_and_sampled_maps_are_valid_label_maps(shape):
    run = labelgen(shape, adv_weight=0.1)
    x = one_hot(run.source.batch(2, run.generator), 5)
    logits, mu, sigma = run.model.autoencoder(x)
    assert logits.shape == x.shape and mu.shape == (2, 2, *[s // 2 for s in shape]) and (sigma > 0).all()
    for step in range(4):  # both phases, and the critic
        values = run.step(step)
        assert all(math.isfinite(v) for v in values.values())
    maps = run.model.sample(3, torch.Generator().manual_seed(0))
    assert maps.shape == (3, 1, *shape) and maps.dtype == torch.int64
    assert 0 <= int(maps.min()) and int(maps.max()) < 5
    soft = run.model.sample(3, torch.Generator().manual_seed(0), soft=True)
    assert soft.shape == (3, 5, *shape)
    torch.testing.assert_close(soft.sum(1), torch.ones(3, *shape))
    assert torch.equal(soft.argmax(1, keepdim=True), maps)  # the same draw, hard and soft


@pytest.mark.parametrize("shape", SHAPES)
def test_spade_renders_images_in_unit_range_and_keeps_the_channels_list(shape):
    run = spade(shape)
    assert run.config.channels == [4, 8]  # SPADENet reverses and extends the list it gets: it got a copy
    image, labels, style = run.source.batch(3, torch.Generator().manual_seed(1))
    assert image.shape == style.shape == labels.shape == (3, 1, *shape)
    assert image.min() >= 0 and image.max() <= 1 and labels.max() < 5
    values = run.step(0)
    assert set(values) == {"g_adv", "g_fm", "g_l1", "g_kl", "g_style", "d_hinge"}
    out = run.model.render(labels, style[:1])
    assert out.shape == (3, 1, *shape) and out.min() >= 0 and out.max() <= 1
    mu, logvar = run.model.style(style)
    assert mu.shape == logvar.shape == (3, 4)


def test_spade_refuses_a_shape_its_linear_layers_cannot_take():
    from learn2synth.errors import ConfigError

    with pytest.raises(ConfigError, match="divide by 2 \\*\\* len\\(channels\\) = 4"):
        SpadeConfig(shape=[30, 32], channels=[4, 8]).validate()


def test_style_loss_equals_a_hand_computed_infonce():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    # cosine similarities: a0.b0 = 1/sqrt2, a0.b1 = 0, a1.b0 = 1/sqrt2, a1.b1 = 1; temperature 0.5 doubles them
    s = [[2 / math.sqrt(2), 0.0], [2 / math.sqrt(2), 2.0]]
    rows = [-s[0][0] + math.log(math.exp(s[0][0]) + math.exp(s[0][1])),
            -s[1][1] + math.log(math.exp(s[1][0]) + math.exp(s[1][1]))]
    cols = [-s[0][0] + math.log(math.exp(s[0][0]) + math.exp(s[1][0])),
            -s[1][1] + math.log(math.exp(s[0][1]) + math.exp(s[1][1]))]
    expected = 0.5 * (sum(rows) / 2 + sum(cols) / 2)
    assert style_contrastive_loss(a, b, temperature=0.5).item() == pytest.approx(expected, rel=1e-6)


def test_style_loss_is_lower_for_an_image_and_its_transformed_copy_than_for_different_images():
    g = torch.Generator().manual_seed(0)
    image, _, _ = PairSource(None, (32, 32), 5).batch(6, g)
    copy = style_transform(image, g)
    assert not torch.equal(copy, image) and copy.min() >= 0 and copy.max() <= 1
    # a fixed code that does not depend on position (flips) but on intensities: the intensity histogram
    def code(x):
        return torch.stack([torch.histc(v, bins=16, min=0, max=1) for v in x.flatten(1)])

    same = style_contrastive_loss(code(image), code(copy))
    shuffled = style_contrastive_loss(code(image), code(copy)[torch.roll(torch.arange(6), 1)])
    assert same < shuffled


def test_kl_divergence_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, sigma = torch.randn(3, 2, 4, generator=g), torch.rand(3, 2, 4, generator=g) + 0.2
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, sigma), torch.distributions.Normal(0, 1))
    torch.testing.assert_close(kl_divergence(mu, sigma), ref.flatten(1).sum(1).mean())


def test_fit_label_keeps_the_majority_class_of_each_block_and_pads_to_a_square():
    label = torch.tensor([[[2, 2, 0, 0],
                           [2, 2, 0, 1],
                           [0, 0, 1, 1],
                           [0, 0, 1, 1]]])
    assert fit_label(label, [2, 2], 3).tolist() == [[[2, 0], [0, 1]]]
    wide = torch.tensor([[[1, 1, 2, 2], [1, 1, 2, 2]]])  # padded to 4x4 with a zero row above and below
    assert fit_label(wide, [4, 4], 3).tolist() == [[[0, 0, 0, 0], [1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0]]]


def test_label_source_resizes_the_mapped_non_zero_part_of_each_map():
    from learn2synth.data import LabelPool
    from learn2synth.io import LabelMapping

    raw = torch.zeros(1, 12, 12, dtype=torch.long)
    raw[0, :, :] = 9  # a "head" label the mapping sends to background
    raw[0, 2:4, 6:10] = 3  # the "brain": 2 x 4 voxels, left half class 1, right half class 2
    raw[0, 2:4, 8:10] = 4
    source = LabelSource(LabelPool([raw]), [4, 4], 3, LabelMapping({3: 1, 4: 2}))
    out = source.batch(1, torch.Generator().manual_seed(0))
    # cropped to the 2 x 4 brain, padded to 4 x 4 (a zero row above and below), resized 4 -> 4
    assert out.tolist() == [[[[0, 0, 0, 0], [1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0]]]]


def test_label_source_draws_only_maps_with_foreground_after_the_mapping():
    from learn2synth.data import LabelPool
    from learn2synth.io import LabelMapping

    head = torch.full((1, 6, 6), 9, dtype=torch.long)  # all "head": background after the mapping
    brain = head.clone()
    brain[0, 1:5, 1:5] = 3
    source = LabelSource(LabelPool([head, brain, head]), [4, 4], 2, LabelMapping({3: 1}))
    assert source.usable == [1]
    out = source.batch(16, torch.Generator().manual_seed(0))
    assert bool((out == 1).all())  # every draw is the brain map, cropped to its foreground
    with pytest.raises(ValueError, match="no label map holds a class other than background"):
        LabelSource(LabelPool([head]), [4, 4], 2, LabelMapping({3: 1}))


def test_losses_drop_on_a_fixed_batch():
    torch.manual_seed(0)
    run = labelgen((16, 16), ae_steps=40, diffusion_steps=0, ae_lr=3e-3)
    run.source = FixedLabels(run.source.batch(2, torch.Generator().manual_seed(3)))
    x = one_hot(run.source.labels, 5)

    def ce():
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(run.model.autoencoder.reconstruct(x), run.source.labels[:, 0])

    start = ce()
    for step in range(40):
        run.step(step)
    assert ce() < 0.5 * start


def test_diffusion_noise_prediction_improves_on_a_fixed_batch():
    from monai.inferers import LatentDiffusionInferer

    torch.manual_seed(0)
    # 1000 timesteps: most draws are mostly noise, which a few steps learn to predict
    run = labelgen((16, 16), ae_steps=0, diffusion_steps=30, diffusion_lr=3e-3, train_timesteps=1000)
    run.source = FixedLabels(run.source.batch(2, torch.Generator().manual_seed(3)))
    x = one_hot(run.source.labels, 5)
    run.step(0)  # the first diffusion step sets the latent scale
    g = torch.Generator().manual_seed(4)
    noise, t = torch.randn(8, 2, 8, 8, generator=g), torch.randint(0, 1000, (8,), generator=g)

    def mse():
        inferer = LatentDiffusionInferer(run.scheduler, scale_factor=float(run.model.scale_factor))
        with torch.no_grad():
            latent = run.model.autoencoder.encode(x.repeat(4, 1, 1, 1))[0]  # the mean: no sampling noise
            noisy = run.scheduler.add_noise(latent * inferer.scale_factor, noise, t)
            return torch.nn.functional.mse_loss(run.model.unet(noisy, t), noise)

    start = mse()
    for step in range(1, 30):
        run.step(step)
    assert mse() < 0.6 * start


def test_spade_reconstruction_improves_on_a_fixed_batch():
    torch.manual_seed(0)
    run = spade((16, 16), lr=3e-3)
    fixed = run.source.batch(2, torch.Generator().manual_seed(3))
    run.source = FixedLabels(fixed)
    image, labels, style = fixed

    def l1():
        with torch.no_grad():
            return torch.nn.functional.l1_loss(run.model.decode(labels, run.model.style(style)[0]), image)

    start = l1()
    for step in range(30):
        run.step(step)
    assert l1() < 0.5 * start


class FixedLabels:
    def __init__(self, labels):
        self.labels = labels

    def batch(self, n, generator):
        return self.labels


def test_style_image_is_cropped_to_its_support_like_the_training_slices(tmp_path):
    """A style image with a wide zero border reads as the same input as its content alone (fit: resize), since
    training crops style slices to their labels' support; with fit: crop the border stays."""
    import nibabel as nib
    import numpy as np

    from learn2synth.generative.data import read_style_image
    from learn2synth.generative.spade import SpadeConfig

    content = np.arange(1, 65, dtype=np.float32).reshape(8, 8)
    content[3:5, 3:5] = 0  # zeros inside the support stay
    padded = np.zeros((24, 40), np.float32)
    padded[5:13, 20:28] = content
    for name, array in (("content", content), ("padded", padded)):
        nib.save(nib.Nifti1Image(array, np.eye(4)), str(tmp_path / f"{name}.nii.gz"))
    config = SpadeConfig(shape=[8, 8], normalize="minmax", data=str(tmp_path))
    a, b = (read_style_image(tmp_path / f"{n}.nii.gz", config) for n in ("content", "padded"))
    assert a.shape == (1, 1, 8, 8)
    torch.testing.assert_close(a, b)
    config.fit = "crop"
    assert not torch.allclose(read_style_image(tmp_path / "padded.nii.gz", config), a)
