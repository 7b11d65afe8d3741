import pytest
import torch
from torch.func import functional_call

from learn2synth.errors import ConfigError
from learn2synth.nets import build_segmenter

SHAPES = {2: (2, 1, 12, 12), 3: (1, 1, 8, 8, 8)}


def _net(dims, **kw):
    torch.manual_seed(0)
    return build_segmenter(dims, 1, 3, channels=(4, 8), **kw).double()


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("norm", ["instance", "none"])
def test_shape_logits_and_no_buffers(dims, norm):
    net = _net(dims, norm=norm)
    x = torch.randn(SHAPES[dims], dtype=torch.float64)
    y = net(x)
    assert y.shape == (SHAPES[dims][0], 3, *SHAPES[dims][2:])
    assert (y < 0).any() and not torch.allclose(y.sum(1), torch.ones(()).double())  # raw logits
    # nothing a forward pass could update in place
    assert list(net.buffers()) == []


@pytest.mark.parametrize("dims", [2, 3])
def test_functional_call_and_double_backward(dims):
    """functional_call on a parameter dict equals the module, and second derivatives w.r.t. the dict exist."""
    net = _net(dims)
    x = torch.randn(SHAPES[dims], dtype=torch.float64)
    params = {k: p.detach().clone().requires_grad_() for k, p in net.named_parameters()}
    out = functional_call(net, params, (x,))
    torch.testing.assert_close(out, net(x))

    # Hessian-vector product through the network, checked against a central difference of gradients.
    def grad_at(p):
        loss = functional_call(net, p, (x,)).square().mean()
        return torch.autograd.grad(loss, list(p.values()), create_graph=True)

    g = grad_at(params)
    v = [torch.randn_like(t) for t in g]
    hvp = torch.autograd.grad(g, list(params.values()), v)
    h = 1e-6
    plus = grad_at({k: p + h * d for (k, p), d in zip(params.items(), v, strict=True)})
    minus = grad_at({k: p - h * d for (k, p), d in zip(params.items(), v, strict=True)})
    for a, gp, gm in zip(hvp, plus, minus, strict=True):
        torch.testing.assert_close(a, (gp - gm) / (2 * h), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("act", "cls"), [("gelu", torch.nn.GELU), ("prelu", torch.nn.PReLU), ("silu", None)])
def test_activation(act, cls):
    net = build_segmenter(2, 1, 2, channels=(4, 8), act=act)
    names = {type(m).__name__ for m in net.modules()}
    assert (cls.__name__ if cls else "Swish") in names


def test_dropout_is_applied():
    net = build_segmenter(2, 1, 2, channels=(4, 8), dropout=0.5)
    x = torch.randn(1, 1, 8, 8)
    torch.manual_seed(1)
    a = net(x)
    torch.manual_seed(2)
    assert not torch.equal(a, net(x))


def test_batch_norm_refused_with_reason():
    with pytest.raises(ConfigError, match="running statistics") as info:
        build_segmenter(2, 1, 2, norm="batch")
    assert info.value.key == "net.norm"


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"spatial_dims": 4}, "net.spatial_dims"),
        ({"in_channels": 0}, "net.in_channels"),
        ({"out_channels": 1.5}, "net.out_channels"),
        ({"channels": (8,)}, "net.channels"),
        ({"channels": (8, -2)}, "net.channels"),
        ({"channels": (4, 8, 16), "strides": (2,)}, "net.strides"),
        ({"strides": (2, 0, 2)}, "net.strides"),
        ({"num_res_units": -1}, "net.num_res_units"),
        ({"norm": "group"}, "net.norm"),
        ({"dropout": 1.0}, "net.dropout"),
        ({"act": "softmax"}, "net.act"),
    ],
)
def test_bad_arguments(kw, key):
    args = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, **kw}
    with pytest.raises(ConfigError) as info:
        build_segmenter(**args)
    assert info.value.key == key

