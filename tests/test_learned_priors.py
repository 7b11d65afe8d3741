"""The learned-priors augmenter: the hypergradient reaches each learned synthesis prior through the
reparameterized draws (checked against central finite differences of the real loss after the inner update),
projection into valid ranges, and a checkpoint round trip."""

import pytest
import torch
from torch.func import functional_call

from learn2synth.augment.learned_priors import KINDS, LearnedPriorsAugmenter
from learn2synth.errors import ConfigError
from learn2synth.losses import dice_ce_loss
from learn2synth.meta.hypergrad import meta_step, plain_step
from learn2synth.meta.optim import SGD
from learn2synth.nets import build_segmenter
from learn2synth.synth import SynthConfig, Synthesizer, phantom_labels

F64 = torch.float64
SHAPES = {2: (16, 16), 3: (8, 8, 8)}
K = 4


def synthesizer():
    config = SynthConfig()
    config.deform.enabled = False
    config.noise.enabled = True
    config.noise.std = [0.02, 0.08]
    config.bias.scale = 0.3  # at least 2 control points on 8 voxels
    config.gmm.std = [0.02, 0.06]
    return Synthesizer(config, dtype=F64)


class Problem:
    def __init__(self, dims, names=tuple(KINDS)):
        torch.manual_seed(0)
        self.net = build_segmenter(dims, 1, K, channels=(4, 8), act="gelu").double()
        g = torch.Generator().manual_seed(3)
        self.labels = phantom_labels(4, SHAPES[dims], K, generator=g)  # iso and aniso items
        self.real_image = torch.rand(1, 1, *SHAPES[dims], generator=g, dtype=F64)
        self.real_label = phantom_labels(1, SHAPES[dims], K, generator=g)
        self.aug = LearnedPriorsAugmenter(synthesizer(), K, names).double()
        self.draw = self.aug.sample(self.labels, torch.Generator().manual_seed(5))
        self.opt = SGD(lr=0.5)
        self.params = {k: p.detach().clone().requires_grad_() for k, p in self.net.named_parameters()}

    def synth_loss(self):
        return lambda phi: dice_ce_loss(functional_call(self.net, phi, (self.aug.apply(self.labels, self.draw)[0],)),
                                        self.aug.apply(self.labels, self.draw)[1])

    def real_loss(self, phi):
        return dice_ce_loss(functional_call(self.net, phi, (self.real_image,)), self.real_label)

    def hypergrads(self, mode):
        theta = list(self.aug.parameters())
        return meta_step(self.net, self.params, self.opt, self.opt.init(self.params), self.synth_loss(),
                         self.real_loss, theta, mode=mode).hypergrads

    def reference(self, h=1e-6):
        """Central differences of loss_real(phi'(prior)), redoing the plain inner step, element by element."""
        out = []
        for p in self.aug.parameters():
            grad = torch.zeros_like(p)
            for i in range(p.numel()):
                values = []
                for sign in (1, -1):
                    with torch.no_grad():
                        p.view(-1)[i] += sign * h
                    step = plain_step(self.net, self.params, self.opt, self.opt.init(self.params), self.synth_loss())
                    values.append(self.real_loss(step.new_params).item())
                    with torch.no_grad():
                        p.view(-1)[i] -= sign * h
                grad.view(-1)[i] = (values[0] - values[1]) / (2 * h)
            out.append(grad)
        return out


@pytest.mark.parametrize("dims", [2, 3])
def test_hypergradient_of_every_learned_prior_matches_finite_differences(dims):
    problem = Problem(dims)
    exact, reference = problem.hypergrads("exact"), problem.reference()
    for name, got, want in zip(problem.aug.names, exact, reference, strict=True):
        assert bool((want != 0).all()), name  # every element matters: the test can fail
        torch.testing.assert_close(got, want, rtol=2e-3, atol=1e-7, msg=name)
    fd = problem.hypergrads("fd")  # replays the same draw three times; a first-order estimate of the same
    flat = [torch.cat([g.reshape(-1) for g in gs]) for gs in (fd, exact)]
    assert float((flat[0] - flat[1]).norm() / flat[1].norm()) < 1e-2


def test_render_replays_the_draw_and_advances_the_generator_once():
    problem = Problem(2)
    image, target = problem.aug.apply(problem.labels, problem.draw)
    again, same_target = problem.aug.apply(problem.labels, problem.draw)
    assert torch.equal(image, again) and torch.equal(target, same_target)
    g = torch.Generator().manual_seed(5)
    problem.aug.sample(problem.labels, g)
    reference = torch.Generator().manual_seed(5)
    problem.aug.synth.sample(problem.labels, reference)
    assert torch.equal(g.get_state(), reference.get_state())
    assert torch.equal(target, problem.labels)  # no deformation here: the target is the label map itself


def test_projection_keeps_ranges_valid_and_caps_max_values():
    aug = LearnedPriorsAugmenter(synthesizer(), K, ["gmm.mean", "gmm.std", "noise.std", "bias.std"])
    with torch.no_grad():
        aug.prior("gmm.std")[0] = torch.tensor([0.3, 0.1])  # crossed
        aug.prior("gmm.std")[1] = torch.tensor([-0.2, 0.1])  # negative
        aug.prior("noise.std").copy_(torch.tensor([0.1, 0.9]))
        aug.prior("gmm.mean")[0] = torch.tensor([-0.5, -0.2])  # means may be negative
    aug.bound_({"noise.std": 0.2})
    assert aug.prior("gmm.std")[0].tolist() == pytest.approx([0.2, 0.2])
    assert aug.prior("gmm.std")[1].tolist() == pytest.approx([0.0, 0.1])
    assert aug.prior("noise.std").tolist() == pytest.approx([0.1, 0.2])
    assert aug.prior("gmm.mean")[0].tolist() == pytest.approx([-0.5, -0.2])
    with pytest.raises(ConfigError, match="gamma.std not learned"):
        aug.bound_({"gamma.std": 1.0})


def test_priors_of_disabled_effects_and_unknown_names_are_refused():
    with pytest.raises(ConfigError, match="synth.gamma.enabled is false"):
        LearnedPriorsAugmenter(Synthesizer(_gamma_off()), K, ["gamma.std"])
    with pytest.raises(ConfigError, match="cannot learn 'deform.rotation'"):
        LearnedPriorsAugmenter(synthesizer(), K, ["deform.rotation"])
    assert "gamma.std" not in LearnedPriorsAugmenter(Synthesizer(_gamma_off()), K).names  # default list skips it


def _gamma_off():
    config = SynthConfig()
    config.gamma.enabled = False
    return config


def test_checkpoint_round_trip_of_the_augmenter_state(tmp_path):
    from learn2synth.train import setup, train
    from test_train import params_of, tiny

    config = tiny("learn2synth", "augmenter.kind=learned_priors", "steps=3")
    train(config, tmp_path, progress=False, tensorboard=False)
    stored = params_of(tmp_path)["augmenter"]
    fresh, _ = setup(config)
    before = fresh.augmenter.learned_values()
    fresh.augmenter.load_state_dict(stored)
    after = fresh.augmenter.learned_values()
    assert after != before  # training moved the priors
    assert after == {k: pytest.approx(v) for k, v in after.items()}
    assert all(torch.equal(stored[k], v) for k, v in fresh.augmenter.state_dict().items())
    assert "gmm.mean.3.hi" in (tmp_path / "metrics.csv").read_text().splitlines()[0]


def test_training_writes_the_table_and_figure_of_the_learned_priors(tmp_path, capsys):
    from learn2synth.report_demo import report_run
    from learn2synth.report_priors import priors_table
    from learn2synth.train import train
    from test_train import tiny

    config = tiny("learn2synth", "augmenter.kind=learned_priors", "augmenter.priors=[gmm.mean]", "steps=2")
    train(config, tmp_path, progress=False, tensorboard=False)
    assert (tmp_path / "learned_priors.png").stat().st_size > 1000
    rows = priors_table(tmp_path)
    assert len(rows) == 6 and rows[0]["learned"] == "mean" and rows[0]["mean_lo"] <= rows[0]["mean_hi"]
    assert rows[2]["std_lo"] == rows[2]["std_hi"] == 0.0  # preset none: std not learned, as configured
    assert "| 5 |" in (tmp_path / "learned_priors.md").read_text()
    assert report_run(tmp_path) == rows and "intensity class" in capsys.readouterr().out


def test_fit_to_real_starts_each_tissue_class_from_the_real_intensities():
    # label tables: values 0 (background), 2 and 41 (one intensity class, target 1), 3 (target 2), 24 (target 0),
    # and 4 (target 2) with 50 (target 0) in one class, as SynthSeg's CSF class holds ventricles and outer CSF
    config = SynthConfig()
    config.labels.generation_labels = [0, 2, 41, 3, 24, 4, 50]
    config.labels.generation_classes = [0, 1, 1, 2, 3, 4, 4]
    config.labels.segmentation_labels = [0, 1, 1, 2, 0, 2, 0]
    aug = LearnedPriorsAugmenter(Synthesizer(config), 5, ["gmm.mean", "gmm.std"])
    before = aug.prior("gmm.mean").detach().clone()
    label = torch.zeros(1, 10, 10, dtype=torch.long)
    label[:, :, :5], label[:, :, 5:] = 1, 2
    label[:, 0] = 0  # a row of background
    first = torch.where(label == 1, 0.3, 0.8).float()
    second = torch.where(label == 1, 0.4, 0.6).float()
    second[:, 1, 7] = 0.8  # one brighter voxel of class 2 in the second example
    fitted = aug.fit_to_real([first, second], [label, label], margin=0.05)
    assert fitted == [1, 2, 4]
    mean, std = aug.prior("gmm.mean").detach(), aug.prior("gmm.std").detach()
    torch.testing.assert_close(mean[1], torch.tensor([0.25, 0.45]))  # class means 0.3 and 0.4, +- margin
    m2 = (0.6 * 44 + 0.8) / 45  # second example: 45 voxels of class 2, one of them at 0.8
    torch.testing.assert_close(mean[2], torch.tensor([m2 - 0.05, 0.85]))
    torch.testing.assert_close(std[2], torch.tensor([0.0, float(second[label == 2].std())]))
    torch.testing.assert_close(mean[4], mean[2])  # its tissue's statistics
    torch.testing.assert_close(mean[[0, 3]], before[[0, 3]])  # background and non-brain: as they were


def test_fit_real_starts_a_run_from_its_real_training_examples():
    from learn2synth.train import setup
    from test_train import tiny

    config = tiny("learn2synth", "augmenter.kind=learned_priors", "augmenter.priors=[gmm.mean]")
    plain, _ = setup(config)
    config.augmenter.fit_real = True
    fitted, _ = setup(config)
    expected = LearnedPriorsAugmenter(plain.synth, plain.augmenter.n_classes, ["gmm.mean"])
    classes = expected.fit_to_real(plain.real.images, plain.real.labels)
    assert classes  # phantom classes with voxels in the real examples
    torch.testing.assert_close(fitted.augmenter.prior("gmm.mean"), expected.prior("gmm.mean"))
    assert not torch.equal(fitted.augmenter.prior("gmm.mean"), plain.augmenter.prior("gmm.mean"))
    config.augmenter.kind = "parametric"
    with pytest.raises(ConfigError, match="fit_real"):
        setup(config)
