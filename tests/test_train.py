"""The trainer: every method trains from its config, resume equals an uninterrupted run bit for bit."""

from pathlib import Path

import pytest
import torch

from learn2synth.checkpoint import load_checkpoint
from learn2synth.errors import ConfigError
from learn2synth.train import setup, train
from learn2synth.train_config import load_train_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TINY = ["steps=4", "net.channels=[4,8]", "log_every=1", "val_every=2", "checkpoint_every=2", "threads=1",
        "data.phantom_count=6", "data.phantom_real.train_count=3", "data.phantom_real.test_count=2",
        "batch_size=2", "real_batch_size=2"]


def tiny(name, *extra, shape=(32, 32)):
    sets = [*TINY, f"data.shape=[{','.join(map(str, shape))}]", f"data.spatial_dims={len(shape)}", *extra]
    return load_train_config(ROOT / "configs" / f"{name}.yaml", sets)


def params_of(folder):
    ckpt = load_checkpoint(sorted(Path(folder).glob("step_*.pt"))[-1])
    return ckpt["state"]


def full_and_resumed(config, root, stop_at: int = 3, between=None):
    """Train ``config`` uninterrupted into root/full and, into root/cut, stopped after ``stop_at`` steps (checked:
    no final checkpoint yet), ``between()`` called, then resumed; returns the newest checkpoint states (full, cut)."""
    train(config, root / "full", progress=False, tensorboard=False)
    train(config, root / "cut", progress=False, tensorboard=False, stop_at=stop_at)
    assert not (root / "cut" / f"step_{config.steps:06d}.pt").exists()
    if between is not None:
        between()
    train(config, root / "cut", resume=True, progress=False, tensorboard=False)
    return params_of(root / "full"), params_of(root / "cut")


@pytest.mark.parametrize("name", ["synthseg", "real", "mixed", "finetune", "learn2synth", "learn2synth_residual"])
def test_every_method_trains_from_its_config(tmp_path, name):
    config = tiny(name, "finetune_from=0.5")
    metrics = train(config, tmp_path, progress=False, tensorboard=False)
    assert 0 <= metrics["dice_mean"] <= 1
    state = params_of(tmp_path)
    init = load_checkpoint(tmp_path / "step_000002.pt")["state"]["params"]
    assert any(not torch.equal(state["params"][k], init[k]) for k in init)  # it learned something
    assert (tmp_path / "metrics.csv").read_text().count("\n") >= 4


def initial_raw_sigma(config) -> float:
    from learn2synth.augment import build_augmenter

    return float(build_augmenter(config).raw_sigma.detach())


def test_learn2synth_3d_and_fd_mode(tmp_path):
    config = tiny("learn2synth", "meta.mode=fd", "data.n_classes=5", shape=(16, 16, 16))
    train(config, tmp_path, progress=False, tensorboard=False)
    moved = float(params_of(tmp_path)["augmenter"]["raw_sigma"]) - initial_raw_sigma(config)
    assert abs(moved) > 0.01  # the augmenter learned: 4 Adam steps of lr 0.02 on its raw sigma


EXTRA = {"_meta_every_2": ["meta.meta_every=2", "meta.debias=true"],
         # a deferred hypergradient is pending across the cut (steps 0, 2 are meta steps; the cut is at 3)
         "_deferred": ["meta.meta_every=2", "meta.debias=true", "meta.mode=fd_onesided", "meta.debias_reference=next",
                       "augmenter.kind=learned_priors"]}


@pytest.mark.parametrize("name", ["learn2synth", "finetune", "learn2synth_meta_every_2", "learn2synth_deferred"])
def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path, name):
    suffix = next((s for s in EXTRA if name.endswith(s)), "")
    config = tiny(name.removesuffix(suffix) if suffix else name, "steps=6", "finetune_from=0.5", *EXTRA.get(suffix, []))
    full, cut = full_and_resumed(config, tmp_path)
    for part in full:
        a, b = full[part], cut[part]
        for key in a if isinstance(a, dict) else []:
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key]), (part, key)
    assert (tmp_path / "full" / "metrics.csv").read_text() == (tmp_path / "cut" / "metrics.csv").read_text()


@pytest.mark.skipif(not (SHARED / "brain" / "oasis").exists(), reason="needs ../shared/data")
def test_oasis_config_trains_on_real_slices(tmp_path):
    config = load_train_config(ROOT / "configs" / "oasis_learn2synth.yaml",
                               [*TINY, "steps=2", "val_every=2", "data.shape=[64,64]"])
    metrics = train(config, tmp_path, progress=False, tensorboard=False)
    assert set(metrics) >= {"dice_mean", "dice_4"}


def test_train_cli_refuses_to_overwrite_a_run_and_names_bad_keys(tmp_path, capsys):
    from learn2synth.cli import main

    args = ["train", "--config", str(ROOT / "configs" / "synthseg.yaml"), "--quiet", "--out", str(tmp_path / "r")]
    sets = [x for s in TINY for x in ("--set", s)] + ["--set", "data.shape=[32,32]"]
    assert main([*args, *sets]) == 0
    assert "dice_mean" in capsys.readouterr().out
    before = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert main([*args, *sets]) == 2
    assert "--resume" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == before
    assert main([*args, "--set", "optim.lrr=1", "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optim.lrr" in err and "did you mean 'lr'" in err


def test_threads_option_is_the_config_key_and_wins_over_set():
    from learn2synth.cli import build_parser
    from learn2synth.cli_args import threads_set

    args = build_parser().parse_args(["train", "--out", "r", "--set", "threads=4", "--threads", "1"])
    assert threads_set(args) == ["threads=4", "threads=1"]
    assert load_train_config(None, threads_set(args)).threads == 1  # the later override wins
    args = build_parser().parse_args(["adapt", "--real", "x", "--out", "r"])
    assert threads_set(args) == [] and load_train_config(None, threads_set(args)).threads is None


def test_non_finite_real_loss_skips_both_updates(tmp_path):
    from learn2synth.train import setup

    run, _ = setup(tiny("learn2synth"))
    run.real.images = [torch.full_like(x, float("nan")) for x in run.real.images]
    params = {k: v.clone() for k, v in run.params.items()}
    aug = {k: v.clone() for k, v in run.augmenter.state_dict().items()}
    run.step(0)
    assert run.skipped == 1
    assert all(torch.equal(params[k], run.params[k]) for k in params)
    assert all(torch.equal(aug[k], v) for k, v in run.augmenter.state_dict().items())


def test_training_stops_with_a_clear_message_after_consecutive_skips(tmp_path):
    from learn2synth.train import TrainingError

    config = tiny("synthseg", "optim.name=sgd", "optim.lr=1e38", "max_skipped=3", "steps=10")
    with pytest.raises(TrainingError, match="3 consecutive updates"):
        train(config, tmp_path, progress=False, tensorboard=False)
    assert "skipped" in (tmp_path / "metrics.csv").read_text()


def test_unwritable_output_is_refused_before_training(tmp_path):
    from learn2synth.errors import InputError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        train(tiny("synthseg"), blocker / "run", progress=False, tensorboard=False)


def test_phantom_real_contrast_is_a_fixed_intensity_per_label():
    from learn2synth.sources import phantom_real
    from learn2synth.synth import Synthesizer

    contrast = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    config = tiny("learn2synth", "data.phantom_real.sigma=0", "data.phantom_real.bias=[]",
                  f"data.phantom_real.contrast={contrast}")
    real, test = phantom_real(config, Synthesizer(config.synth))
    for image, label in [*zip(real.images, real.labels, strict=True), *zip(test.images, test.labels, strict=True)]:
        assert torch.equal(image, torch.tensor(contrast)[label])  # hand lookup: no noise, no bias, no rescaling


def test_contrast_and_betas_are_validated():
    from learn2synth.errors import ConfigError

    with pytest.raises(ConfigError, match="contrast"):
        tiny("learn2synth", "data.phantom_real.contrast=[0,0.5,1]")
    with pytest.raises(ConfigError, match="betas"):
        tiny("learn2synth", "augmenter.betas=[0.9]")
    with pytest.raises(ConfigError, match="betas"):
        tiny("learn2synth", "augmenter.betas=[1.0,0.999]")


def test_augmenter_betas_reach_the_optimizer():
    from learn2synth.train import setup

    run, _ = setup(tiny("learn2synth", "augmenter.betas=[0,0.99]"))
    assert run.aug_opt.param_groups[0]["betas"] == (0.0, 0.99)


def test_phantom_real_sigma_range_draws_one_sigma_per_image():
    from learn2synth.sources import phantom_real
    from learn2synth.synth import Synthesizer

    contrast = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    config = tiny("learn2synth", "data.phantom_real.sigma_range=[0.05,0.2]", "data.phantom_real.bias=[]",
                  f"data.phantom_real.contrast={contrast}", "data.phantom_real.test_count=12", "data.shape=[64,64]")
    _, test = phantom_real(config, Synthesizer(config.synth))
    sigmas = torch.stack([(x - torch.tensor(contrast)[y]).std() for x, y in zip(test.images, test.labels,
                                                                                 strict=True)])
    assert 0.04 < sigmas.min() < sigmas.max() < 0.21 and sigmas.max() - sigmas.min() > 0.03
    with pytest.raises(Exception, match="sigma_range"):
        tiny("learn2synth", "data.phantom_real.sigma_range=[0.2,0.1]")


def test_resuming_a_finished_run_reports_its_final_validation(tmp_path):
    config = tiny("synthseg")
    first = train(config, tmp_path, progress=False, tensorboard=False)
    again = train(config, tmp_path, resume=True, progress=False, tensorboard=False)
    assert again["dice_mean"] == first["dice_mean"] and set(first) - {"seconds"} == set(again) - {"seconds"}


@pytest.mark.parametrize("mode", ["exact", "fd", "fd_onesided", "fd_onesided_next"])
def test_debiased_learn2synth_trains_and_learns_differently(tmp_path, mode):
    runs = {}
    extra = ["meta.debias_reference=next"] if mode.endswith("_next") else []
    for debias in (False, True):
        config = tiny("learn2synth", f"meta.mode={mode.removesuffix('_next')}", f"meta.debias={str(debias).lower()}",
                      "meta.meta_every=1", *extra)
        train(config, tmp_path / str(debias), progress=False, tensorboard=False)
        runs[debias] = float(params_of(tmp_path / str(debias))["augmenter"]["raw_sigma"])
    assert abs(runs[True] - initial_raw_sigma(config)) > 0.01 and runs[True] != runs[False]


def test_meta_defaults_are_the_cheap_debiased_estimator():
    """TrainConfig's defaults (benchmarks/results/meta_step.md: 1.4x a synthseg step): fd_onesided every 4th step,
    debiased; 'auto' takes the next step's gradient as reference in the fd modes and an extra batch in exact."""
    meta = load_train_config(None, []).meta
    assert (meta.mode, meta.meta_every, meta.debias, meta.debias_reference) == ("fd_onesided", 4, True, "auto")
    assert meta.deferred_reference
    for sets, deferred in [(["meta.mode=exact"], False), (["meta.mode=fd"], True), (["meta.debias=false"], False),
                           (["meta.debias_reference=extra"], False)]:
        assert load_train_config(None, sets).meta.deferred_reference is deferred, sets
    run, _ = setup(tiny("learn2synth", "meta.mode=exact", "meta.debias_reference=auto", "meta.debias=true"))
    assert not run.deferring  # exact mode with auto: the extra batch, as before


def test_deferred_reference_needs_an_fd_mode():
    with pytest.raises(ConfigError, match="debias_reference"):
        tiny("learn2synth", "meta.mode=exact", "meta.debias=true", "meta.debias_reference=next")


def test_rows_logged_between_meta_steps_show_the_last_real_loss(tmp_path):
    from learn2synth.runlog import series

    config = tiny("learn2synth", "steps=8", "meta.meta_every=2", "log_every=2", "val_every=100")
    train(config, tmp_path, progress=False, tensorboard=False)
    real = series(tmp_path / "metrics.csv", ["loss_real"])["loss_real"]
    # meta steps are the even step indices (0, 2, ...); rows are logged after odd ones (steps 2, 4, ...)
    assert [s for s, _ in real] == [2, 4, 6, 8]


def test_lr_milestones_equal_a_resume_with_the_lower_rate(tmp_path):
    """A step decay at step 3 gives the same weights as training 3 steps at lr, then resuming at lr * gamma."""
    base = ["steps=6", "checkpoint_every=3", "optim.lr=0.01"]
    train(tiny("synthseg", *base, "optim.milestones=[3]", "optim.gamma=0.1"), tmp_path / "sched",
          progress=False, tensorboard=False)
    train(tiny("synthseg", *base), tmp_path / "by_hand", progress=False, tensorboard=False, stop_at=3)
    train(tiny("synthseg", *base, "optim.lr=0.001"), tmp_path / "by_hand", resume=True, progress=False,
          tensorboard=False)
    train(tiny("synthseg", *base), tmp_path / "constant", progress=False, tensorboard=False)
    sched, by_hand = params_of(tmp_path / "sched")["params"], params_of(tmp_path / "by_hand")["params"]
    constant = params_of(tmp_path / "constant")["params"]
    assert all(torch.equal(sched[k], by_hand[k]) for k in sched)
    assert not all(torch.equal(sched[k], constant[k]) for k in sched)  # the decay changed the run


def test_deferred_hypergradient_replays_the_theta_its_batch_used(tmp_path):
    """With meta_every=1 the augmenter moves between a meta-step and the step that finishes its hypergradient;
    the one-sided difference is taken against a base point computed at the earlier theta, so its perturbed pass
    must replay that theta. Then one-sided and central differences (no base point) learn the same priors
    (measured: 2e-5 apart; 0.05-0.08 apart when the perturbed pass uses the current theta)."""
    learned = {}
    for mode, extra in (("fd", []), ("fd_onesided", []), ("frozen", ["meta.warmup=100"])):
        config = tiny("learn2synth", "steps=5", f"meta.mode={mode.replace('frozen', 'fd')}", "meta.debias=true",
                      "meta.debias_reference=next", "augmenter.kind=learned_priors", *extra)
        train(config, tmp_path / mode, progress=False, tensorboard=False)
        learned[mode] = params_of(tmp_path / mode)["augmenter"]
    for key, value in learned["fd"].items():
        assert torch.allclose(value, learned["fd_onesided"][key], atol=1e-3), key
    moved = max(float((v - learned["frozen"][k]).abs().max()) for k, v in learned["fd"].items())
    assert moved > 1e-2  # the priors did move (the runs are comparable, not both frozen)
