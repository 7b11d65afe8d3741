import io

import pytest
import torch
from torch import nn

import learn2synth.meta.optim as optim_mod
from learn2synth.errors import ConfigError
from learn2synth.meta.optim import SGD, Adam, AdamW, get_optimizer


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()


def _batches(n=6):
    g = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(8, 4, generator=g, dtype=torch.float64),
            torch.randn(8, 2, generator=g, dtype=torch.float64),
        )
        for _ in range(n)
    ]


def _loss(model, params, x, y):
    out = torch.func.functional_call(model, params, (x,))
    return (out - y).square().mean()


CASES = [
    (SGD, torch.optim.SGD, {"lr": 0.1}),
    (SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    (SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}),
    (SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.8, "nesterov": True}),
    (SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.1}),
    (Adam, torch.optim.Adam, {"lr": 0.05}),
    (Adam, torch.optim.Adam, {"lr": 0.05, "betas": (0.8, 0.9), "eps": 1e-6, "weight_decay": 0.1}),
    (AdamW, torch.optim.AdamW, {"lr": 0.05}),
    (AdamW, torch.optim.AdamW, {"lr": 0.05, "weight_decay": 0.3}),
]


@pytest.mark.parametrize(("ours", "theirs", "kw"), CASES)
def test_matches_torch_optim(ours, theirs, kw):
    """Six steps without a graph land on the same parameters and state as torch.optim."""
    model = _model()
    reference = _model()
    torch_opt = theirs(reference.parameters(), **kw)
    opt = ours(**kw)
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    state = opt.init(params)
    for x, y in _batches():
        torch_opt.zero_grad()
        _loss(reference, dict(reference.named_parameters()), x, y).backward()
        torch_opt.step()
        p = {k: t.requires_grad_() for k, t in params.items()}
        grads = dict(zip(p, torch.autograd.grad(_loss(model, p, x, y), list(p.values())), strict=True))
        with torch.no_grad():
            params, state = opt.step(p, grads, state)
    assert state["step"] == 6
    for k, p in reference.named_parameters():
        torch.testing.assert_close(params[k], p.detach(), rtol=0, atol=1e-6)
        for name in opt.buffers:
            if state[name]:
                torch.testing.assert_close(state[name][k], torch_opt.state[p][name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("opt", [SGD(lr=0.1, momentum=0.9), Adam(lr=0.1)])
def test_step_does_not_modify_inputs(opt):
    params = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5])}
    grads = {"w": torch.tensor([0.3, -0.2]), "b": torch.tensor([1.0])}
    state = opt.step(params, grads, opt.init(params))[1]
    copies = [{k: t.clone() for k, t in d.items()} for d in (params, grads)]
    state_copy = opt.state_dict(state)
    state_copy = {
        k: ({n: t.clone() for n, t in v.items()} if isinstance(v, dict) else v) for k, v in state_copy.items()
    }
    opt.step(params, grads, state)
    for d, c in zip((params, grads), copies, strict=True):
        for k in d:
            assert torch.equal(d[k], c[k])
    for name in opt.buffers:
        for k in state[name]:
            assert torch.equal(state[name][k], state_copy[name][k])


def _point(opt, steps_before=1):
    """Parameters, gradients and a state after `steps_before` steps (float64), one zero gradient entry."""
    g = torch.Generator().manual_seed(3)
    params = {
        "w": torch.randn(3, 2, generator=g, dtype=torch.float64),
        "b": torch.randn(2, generator=g, dtype=torch.float64),
        "a": torch.randn(1, generator=g, dtype=torch.float64),  # 1-element tensors trip some foreach backwards
    }
    state = opt.init(params)
    for _ in range(steps_before):
        grads = {k: torch.randn(p.shape, generator=g, dtype=torch.float64) for k, p in params.items()}
        params, state = opt.step(params, grads, state)
    grads = {k: torch.randn(p.shape, generator=g, dtype=torch.float64) for k, p in params.items()}
    grads["b"][0] = 0.0
    return params, grads, state


OPTS = [
    SGD(lr=0.1),
    SGD(lr=0.1, momentum=0.9, dampening=0.2),
    SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    Adam(lr=0.1, weight_decay=0.01),
    Adam(lr=0.1, eps_root=1e-12),
    AdamW(lr=0.1),
]


@pytest.mark.parametrize("opt", OPTS, ids=repr)
@pytest.mark.parametrize("steps_before", [0, 2])
def test_vjp_matches_full_jacobian(opt, steps_before):
    """vjp equals v @ J with J = d new_params / d grads built entry by entry with torch.func.jacrev."""
    params, grads, state = _point(opt, steps_before)
    keys = list(params)
    flat = torch.cat([grads[k].reshape(-1) for k in keys])
    sizes = [grads[k].numel() for k in keys]

    def update(flat_g):
        parts = dict(zip(keys, torch.split(flat_g, sizes), strict=True))
        g = {k: parts[k].reshape(grads[k].shape) for k in keys}
        new = opt.step(params, g, state)[0]
        return torch.cat([new[k].reshape(-1) for k in keys])

    jacobian = torch.func.jacrev(update)(flat)
    gen = torch.Generator().manual_seed(4)
    v = {k: torch.randn(grads[k].shape, generator=gen, dtype=torch.float64) for k in keys}
    expected = torch.cat([v[k].reshape(-1) for k in keys]) @ jacobian
    got = opt.vjp(params, grads, state, v)
    assert torch.isfinite(expected).all()
    torch.testing.assert_close(torch.cat([got[k].reshape(-1) for k in keys]), expected)
    # SGD's closed form agrees with the generic autograd vjp
    generic = optim_mod.FunctionalOptimizer.vjp(opt, params, grads, state, v)
    for k in keys:
        torch.testing.assert_close(got[k], generic[k])


@pytest.mark.parametrize("opt", [Adam(lr=0.1), AdamW(lr=0.1), Adam(lr=0.1, eps_root=1e-16)], ids=repr)
def test_adam_zero_gradient_gives_finite_hypergradient(opt):
    """A gradient entry that is exactly zero (v = 0 at the first step) must not make derivatives NaN."""
    a = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
    params = {"w": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)}
    # d loss / d w = (a0 * w0, 0, a1 * w2): the middle entry is zero whatever a is
    grads = {"w": torch.stack([a[0] * params["w"][0], a[0] * 0.0, a[1] * params["w"][2]])}
    new_params, _ = opt.step(params, grads, opt.init(params))
    (hyper,) = torch.autograd.grad(new_params["w"].sum(), a)
    assert torch.isfinite(hyper).all()
    # and the whole vjp at that point
    assert all(
        torch.isfinite(t).all()
        for t in opt.vjp(
            params, {"w": grads["w"].detach()}, opt.init(params), {"w": torch.ones(3, dtype=torch.float64)}
        ).values()
    )
    # same values as torch.optim when eps_root = 0
    if opt.eps_root == 0:
        w = params["w"].clone().requires_grad_()
        torch_opt = (torch.optim.AdamW if isinstance(opt, AdamW) else torch.optim.Adam)([w], lr=0.1)
        w.grad = grads["w"].detach().clone()
        torch_opt.step()
        torch.testing.assert_close(new_params["w"].detach(), w.detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("opt", [SGD(lr=0.1, momentum=0.9), Adam(lr=0.1)], ids=repr)
def test_state_dict_round_trip(opt):
    params, grads, state = _point(opt, steps_before=2)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(state), buffer)
    buffer.seek(0)
    loaded = opt.load_state_dict(torch.load(buffer, weights_only=True), params)
    a = opt.step(params, grads, state)
    b = opt.step(params, grads, loaded)
    for k in params:
        assert torch.equal(a[0][k], b[0][k])
    assert loaded["step"] == state["step"] == 2
    with pytest.raises(KeyError):
        opt.load_state_dict({"step": 0}, params)


def test_sgd_state_before_first_step_loads():
    opt = SGD(lr=0.1, momentum=0.9)
    params = {"w": torch.zeros(2)}
    assert opt.load_state_dict(opt.state_dict(opt.init(params)), params) == {"step": 0, "momentum_buffer": {}}


def test_get_optimizer_and_errors():
    assert isinstance(get_optimizer("adamw", lr=0.01), AdamW)
    with pytest.raises(ConfigError) as info:
        get_optimizer("rmsprop", lr=0.1)
    assert info.value.key == "optim"
    with pytest.raises(ConfigError) as info:
        get_optimizer("sgd", lr=0.1, betas=(0.9, 0.99))
    assert info.value.key == "optim.betas"
    with pytest.raises(ConfigError) as info:
        SGD(lr=-1.0)
    assert info.value.key == "optim.lr"
    with pytest.raises(ConfigError, match="Nesterov"):
        SGD(lr=0.1, nesterov=True)
    with pytest.raises(ConfigError) as info:
        Adam(betas=(0.9, 1.0))
    assert info.value.key == "optim.betas"

