import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from learn2synth.errors import ConfigError
from learn2synth.losses import dice_ce_loss
from learn2synth.meta.hypergrad import FD_STEP, finish_deferred, meta_step, plain_step
from learn2synth.meta.optim import SGD, Adam
from learn2synth.nets import build_segmenter

F64 = torch.float64
SHAPES = {2: (2, 1, 12, 12), 3: (1, 1, 8, 8, 8)}
OPTS = {
    "sgd": lambda: SGD(lr=0.5),
    "momentum": lambda: SGD(lr=0.3, momentum=0.9),
    "adam": lambda: Adam(lr=0.01),
}


class Problem:
    """A tiny segmenter, a synthetic batch with a toy augmentation image * softplus(a) + b * noise, real data.

    The activation is smooth (GELU): with PReLU the inner gradient jumps where a pre-activation changes sign, and
    finite differences of the hypergradient across such a kink are meaningless.
    """

    def __init__(self, dims, dropout=0.0):
        torch.manual_seed(0)
        self.net = build_segmenter(dims, 1, 3, channels=(4, 8), dropout=dropout, act="gelu").double()
        g = torch.Generator().manual_seed(1)
        shape = SHAPES[dims]
        self.image = torch.randn(shape, generator=g, dtype=F64)
        self.label = torch.randint(0, 3, (shape[0], 1, *shape[2:]), generator=g)
        self.noise = torch.randn(shape, generator=g, dtype=F64)
        self.real_image = torch.randn((1, *shape[1:]), generator=g, dtype=F64)
        self.real_label = torch.randint(0, 3, (1, 1, *shape[2:]), generator=g)
        self.theta = [
            torch.tensor(0.3, dtype=F64, requires_grad=True),
            torch.tensor(0.2, dtype=F64, requires_grad=True),
        ]

    def params(self):
        return {k: p.detach().clone().requires_grad_() for k, p in self.net.named_parameters()}

    def augment(self, theta):
        return self.image * F.softplus(theta[0]) + theta[1] * self.noise

    def synth_loss(self, theta=None):
        theta = self.theta if theta is None else theta
        return lambda phi: dice_ce_loss(functional_call(self.net, phi, (self.augment(theta),)), self.label)

    def real_loss(self, scale=1.0):
        return lambda phi: scale * dice_ce_loss(functional_call(self.net, phi, (self.real_image,)), self.real_label)

    def warm_start(self, opt):
        """Parameters and optimizer state after one plain step (non-zero momentum / moments)."""
        params = self.params()
        state = opt.init(params)
        warm = plain_step(self.net, params, opt, state, self.synth_loss([torch.tensor(0.0), torch.tensor(0.5)]))
        return warm.new_params, warm.new_opt_state

    def meta_args(self, opt):
        """``(params, state, args)``: the warm start, and meta_step's positional arguments at it."""
        params, state = self.warm_start(opt)
        return params, state, (self.net, params, opt, state, self.synth_loss(), self.real_loss(), self.theta)


def _rel(a, b):
    a, b = torch.stack(list(a)), torch.stack(list(b))
    return float((a - b).norm() / b.norm())


def _reference_hypergrad(problem, params, opt, state, h=1e-5):
    """Central difference of loss_real(phi'(theta)) in theta, redoing the plain inner step."""
    out = []
    for i in range(len(problem.theta)):
        values = []
        for sign in (1, -1):
            theta = [t.detach().clone() for t in problem.theta]
            theta[i] += sign * h
            step = plain_step(problem.net, params, opt, state, problem.synth_loss(theta))
            values.append(problem.real_loss()(step.new_params).item())
        out.append(torch.tensor((values[0] - values[1]) / (2 * h), dtype=F64))
    return out


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("opt_name", sorted(OPTS))
def test_exact_matches_finite_differences_of_the_inner_step(dims, opt_name):
    problem = Problem(dims)
    opt = OPTS[opt_name]()
    params, state, args = problem.meta_args(opt)
    result = meta_step(*args)
    reference = _reference_hypergrad(problem, params, opt, state)
    assert all(r.abs() > 1e-8 for r in reference)  # a test that can fail
    assert _rel(result.hypergrads, reference) < 1e-3


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("opt_name", sorted(OPTS))
def test_fd_mode_agrees_with_exact(dims, opt_name):
    problem = Problem(dims)
    opt = OPTS[opt_name]()
    *_, args = problem.meta_args(opt)
    exact = meta_step(*args, mode="exact")
    fd = meta_step(*args, mode="fd")
    assert _rel(fd.hypergrads, exact.hypergrads) < 1e-2
    assert fd.loss_synth == exact.loss_synth and fd.loss_real == exact.loss_real


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("opt_name", sorted(OPTS))
def test_fd_onesided_agrees_with_exact_and_with_central_differences_of_the_outer_objective(dims, opt_name):
    """The forward difference (one perturbed pass, the base point from the synthetic backward) estimates the same
    hypergradient: against the exact mode and against central differences of loss_real(phi'(theta)) in theta."""
    problem = Problem(dims)
    opt = OPTS[opt_name]()
    params, state, args = problem.meta_args(opt)
    exact = meta_step(*args, mode="exact")
    onesided = meta_step(*args, mode="fd_onesided")
    reference = _reference_hypergrad(problem, params, opt, state)
    assert all(r.abs() > 1e-8 for r in reference)
    assert _rel(onesided.hypergrads, exact.hypergrads) < 1e-2
    assert _rel(onesided.hypergrads, reference) < 1e-2
    assert onesided.loss_synth == exact.loss_synth and onesided.loss_real == exact.loss_real
    # the truncation error is first order in eps: a 10x larger step is visibly worse (the difference is
    # taken, not assumed: a base point at the wrong place would not shrink with eps)
    coarse = meta_step(*args, mode="fd_onesided", fd_eps=10 * FD_STEP["fd_onesided"] * _inverse_w_norm(
        opt, params, state, problem))
    assert _rel(coarse.hypergrads, exact.hypergrads) > _rel(onesided.hypergrads, exact.hypergrads)


def _inverse_w_norm(opt, params, state, problem):
    """1 / ||w||, w = (d phi' / d g)^T v, recomputed (the fd modes' default step is FD_STEP[mode] / ||w||)."""
    phi = {k: p.detach().requires_grad_(True) for k, p in params.items()}
    keys = list(phi)
    grads = torch.autograd.grad(problem.synth_loss()(phi), list(phi.values()))
    new, _ = opt.step(phi, dict(zip(keys, grads, strict=True)), state)
    new = {k: p.detach().requires_grad_(True) for k, p in new.items()}
    v = torch.autograd.grad(problem.real_loss()(new), list(new.values()))
    w = opt.vjp(phi, dict(zip(keys, grads, strict=True)), state, dict(zip(keys, v, strict=True)))
    return 1.0 / float(torch.linalg.vector_norm(torch.stack([w[k].norm() for k in keys])))


@pytest.mark.parametrize("mode", ["fd", "fd_onesided"])
def test_fd_mode_replays_dropout(mode):
    """With dropout, the synthetic evaluations of the fd modes must see the same mask as the exact mode's one."""
    problem = Problem(2, dropout=0.3)
    opt = SGD(lr=0.5)
    params = problem.params()
    args = (problem.net, params, opt, opt.init(params), problem.synth_loss(), problem.real_loss(), problem.theta)
    torch.manual_seed(5)
    exact = meta_step(*args, mode="exact")
    after_exact = torch.rand(1)
    torch.manual_seed(5)
    fd = meta_step(*args, mode=mode)
    assert torch.equal(torch.rand(1), after_exact)  # the RNG ends where the exact mode leaves it
    assert _rel(fd.hypergrads, exact.hypergrads) < 1e-2


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("mode", ["exact", "fd", "fd_onesided"])
@pytest.mark.parametrize(
    ("opt", "torch_opt"),
    [
        (
            lambda: SGD(lr=0.3, momentum=0.9, nesterov=True),
            lambda p: torch.optim.SGD(p, lr=0.3, momentum=0.9, nesterov=True),
        ),
        (lambda: Adam(lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    ],
    ids=["nesterov", "adam"],
)
def test_update_is_the_plain_synthetic_step(dims, mode, opt, torch_opt):
    """phi' is torch.optim's step on the synthetic loss alone; the real loss never touches phi."""
    problem = Problem(dims)
    opt = opt()
    params = dict(problem.net.named_parameters())  # the module's own parameters: check they get no .grad
    state = opt.init(params)
    result = meta_step(
        problem.net, params, opt, state, problem.synth_loss(), problem.real_loss(), problem.theta, mode=mode
    )

    reference_net = copy.deepcopy(problem.net)
    reference_opt = torch_opt(reference_net.parameters())
    image = problem.augment([t.detach() for t in problem.theta])
    dice_ce_loss(reference_net(image), problem.label).backward()
    reference_opt.step()
    for k, p in reference_net.named_parameters():
        torch.testing.assert_close(result.new_params[k], p.detach(), rtol=0, atol=1e-10)
        assert result.new_params[k].is_leaf and result.new_params[k].grad_fn is None
        assert params[k].grad is None
    assert result.new_opt_state["step"] == 1

    # a different real loss changes the hypergradient but not phi' nor the state
    other = meta_step(
        problem.net, params, opt, state, problem.synth_loss(), problem.real_loss(100.0), problem.theta, mode=mode
    )
    for k in params:
        assert torch.equal(other.new_params[k], result.new_params[k])
    for name in opt.buffers:
        for k, t in result.new_opt_state[name].items():
            assert torch.equal(other.new_opt_state[name][k], t)
    assert _rel(other.hypergrads, [100 * h for h in result.hypergrads]) < 1e-6
    assert all(t.grad is None for t in problem.theta)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("mode", ["exact", "fd", "fd_onesided"])
def test_alpha_scales_hypergradients(dims, mode):
    problem = Problem(dims)
    opt = SGD(lr=0.5, momentum=0.5)
    *_, args = problem.meta_args(opt)
    one = meta_step(*args, mode=mode, alpha=1.0)
    scaled = meta_step(*args, mode=mode, alpha=2.5)
    assert _rel(scaled.hypergrads, [2.5 * h for h in one.hypergrads]) < 1e-9
    zero = meta_step(*args, mode=mode, alpha=0.0)
    assert all(torch.equal(h, torch.zeros_like(h)) for h in zero.hypergrads)


def test_plain_step_and_unused_theta():
    problem = Problem(2)
    opt = SGD(lr=0.5)
    params = problem.params()
    unused = torch.tensor(1.0, dtype=F64, requires_grad=True)
    for mode in ("exact", "fd", "fd_onesided"):
        result = meta_step(
            problem.net,
            params,
            opt,
            opt.init(params),
            problem.synth_loss(),
            problem.real_loss(),
            [*problem.theta, unused],
            mode=mode,
        )
        assert torch.equal(result.hypergrads[-1], torch.zeros(()).double())
    # plain_step: p - lr * grad
    step = plain_step(problem.net, params, opt, opt.init(params), problem.real_loss())
    loss = problem.real_loss()(params)
    grads = torch.autograd.grad(loss, list(params.values()))
    for (k, p), g in zip(params.items(), grads, strict=True):
        torch.testing.assert_close(step.new_params[k], p.detach() - 0.5 * g)
    assert step.loss == pytest.approx(loss.item())


def test_bad_arguments():
    problem = Problem(2)
    opt = SGD(lr=0.1)
    params = problem.params()
    args = (problem.net, params, opt, opt.init(params), problem.synth_loss(), problem.real_loss(), problem.theta)
    with pytest.raises(ConfigError) as info:
        meta_step(*args, mode="second-order")
    assert info.value.key == "meta.mode"
    with pytest.raises(ConfigError):
        meta_step(*args, mode="fd", fd_eps=0.0)
    bn_net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    with pytest.raises(ConfigError, match="running statistics"):
        meta_step(bn_net, dict(bn_net.named_parameters()), *args[2:])


@pytest.mark.parametrize("mode", ["exact", "fd", "fd_onesided"])
def test_reference_loss_is_subtracted_from_the_outer_objective(mode):
    """With a reference batch the hypergradient is d [loss_real - loss_ref](phi'(theta)) / d theta (central
    differences through the plain inner step), and the logged real loss stays the real loss alone."""
    problem = Problem(2)
    opt = Adam(lr=0.01)
    params, state = problem.warm_start(opt)
    ref_image = torch.randn(problem.image.shape, generator=torch.Generator().manual_seed(5), dtype=F64)

    def reference(phi):  # an independent batch that does not depend on theta
        return dice_ce_loss(functional_call(problem.net, phi, (ref_image,)), problem.label)

    result = meta_step(problem.net, params, opt, state, problem.synth_loss(), problem.real_loss(), problem.theta,
                       mode=mode, reference_loss=reference)
    expected = []
    for i in range(len(problem.theta)):
        values = []
        for sign in (1, -1):
            theta = [t.detach().clone() for t in problem.theta]
            theta[i] += sign * 1e-5
            phi2 = plain_step(problem.net, params, opt, state, problem.synth_loss(theta)).new_params
            values.append((problem.real_loss()(phi2) - reference(phi2)).item())
        expected.append(torch.tensor((values[0] - values[1]) / 2e-5, dtype=F64))
    plain = meta_step(problem.net, params, opt, state, problem.synth_loss(), problem.real_loss(), problem.theta,
                      mode=mode)
    assert _rel(expected, plain.hypergrads) > 1e-2  # the reference changes the answer: the test can fail
    assert _rel(result.hypergrads, expected) < (1e-3 if mode == "exact" else 1e-2)
    assert result.loss_real == plain.loss_real
    same = meta_step(problem.net, params, opt, state, problem.synth_loss(), problem.real_loss(), problem.theta,
                     mode=mode, reference_loss=problem.real_loss())
    assert all(float(h.abs()) < 1e-12 for h in same.hypergrads)  # loss_real - loss_real: nothing to learn


@pytest.mark.parametrize("mode", ["fd", "fd_onesided"])
def test_deferred_reference_equals_the_reference_loss(mode):
    """A deferred meta-step finished with the reference batch's gradient at phi' gives the hypergradient of
    meta_step with that reference_loss (same w, same perturbation), and the same phi'; the central differences of
    the debiased outer objective agree with both."""
    problem = Problem(2)
    opt = Adam(lr=0.01)
    params, state = problem.warm_start(opt)
    ref_image = torch.randn(problem.image.shape, generator=torch.Generator().manual_seed(5), dtype=F64)

    def reference(phi):
        return dice_ce_loss(functional_call(problem.net, phi, (ref_image,)), problem.label)

    args = (problem.net, params, opt, state, problem.synth_loss(), problem.real_loss(), problem.theta)
    direct = meta_step(*args, mode=mode, reference_loss=reference)
    deferred = meta_step(*args, mode=mode, defer=True)
    assert deferred.hypergrads is None and deferred.deferred is not None
    for k in direct.new_params:
        assert torch.equal(direct.new_params[k], deferred.new_params[k])
    phi2 = deferred.new_params
    ref_grads = dict(zip(phi2, torch.autograd.grad(reference(phi2), list(phi2.values())), strict=True))
    finished = finish_deferred(deferred.deferred, ref_grads, problem.synth_loss(), problem.theta, opt)
    assert _rel(finished, direct.hypergrads) < 1e-9
    plain = meta_step(*args, mode=mode)
    assert _rel(finished, plain.hypergrads) > 1e-2  # the reference matters: the test can fail
    # the synthetic gradient the update took is returned: Adam's first step from the warm state reproduces phi'
    again = opt.step(params, deferred.synth_grads, state)[0]
    assert all(torch.allclose(again[k], phi2[k]) for k in phi2)


def test_deferred_needs_an_fd_mode_and_no_reference_loss():
    problem = Problem(2)
    opt = SGD(lr=0.1)
    params = problem.params()
    args = (problem.net, params, opt, opt.init(params), problem.synth_loss(), problem.real_loss(), problem.theta)
    with pytest.raises(ConfigError, match="fd or fd_onesided"):
        meta_step(*args, mode="exact", defer=True)
    with pytest.raises(ConfigError):
        meta_step(*args, mode="fd", defer=True, reference_loss=problem.real_loss())
