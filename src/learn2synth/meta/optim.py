"""Functional, differentiable optimizers: SGD (momentum, Nesterov) and Adam/AdamW as pure functions.

An optimizer here holds only hyperparameters. Its state (step count, momentum buffers, moments) is a plain
dict that is passed in and returned, and ``step`` never modifies its inputs::

    opt = Adam(lr=1e-3)
    state = opt.init(params)                         # params: dict[str, Tensor]
    params, state = opt.step(params, grads, state)   # grads: same keys

When ``grads`` (or ``params``) carry an autograd graph, the new parameters are differentiable functions of
them: this is what lets the meta-step differentiate the inner update with respect to the augmentation
parameters (:mod:`learn2synth.meta.hypergrad`). ``vjp`` gives ``(d new_params / d grads)^T v`` for the
finite-difference meta-step. With no graph, the updates equal ``torch.optim.SGD`` / ``Adam`` / ``AdamW`` step
for step.

The states are an int and dicts of tensors, so they go into a checkpoint as they are (``state_dict``) and load
with ``torch.load(..., weights_only=True)`` (``load_state_dict``).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from learn2synth.errors import ConfigError

__all__ = ["FunctionalOptimizer", "SGD", "Adam", "AdamW", "OPTIMIZERS", "get_optimizer"]

Params = dict[str, Tensor]
State = dict[str, Any]


#: Above this many elements the parameter math keeps every intra-op thread (see :func:`serial_math`).
SERIAL_MAX_NUMEL = 1 << 22


@contextlib.contextmanager
def serial_math(tensors: Iterable[Tensor]) -> Iterator[None]:
    """Run the enclosed elementwise math on parameter-sized CPU tensors on one intra-op thread.

    An optimizer update is a few dozen elementwise operations on each of a few dozen small tensors. With several
    OpenMP threads each operation on a tensor above torch's grain size (32768 elements) opens a parallel region,
    and on a busy machine every region waits for a descheduled thread: an Adam step on a 0.2M-parameter U-Net
    took 112 ms on 2 threads against 3.8 ms on one (load 3 on 2 cores). The thread count is restored on exit.
    Nothing changes for tensors totalling more than :data:`SERIAL_MAX_NUMEL` elements (their operations are long
    enough to amortize a region), off the CPU, or when torch already runs one thread.
    """
    threads = torch.get_num_threads()
    tensors = list(tensors)
    if (threads == 1 or not tensors or any(t.device.type != "cpu" for t in tensors)
            or sum(t.numel() for t in tensors) > SERIAL_MAX_NUMEL):
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _serial(method):
    """Method decorator: :func:`serial_math` over the ``params`` argument."""

    @functools.wraps(method)
    def wrapper(self, params, *args, **kwargs):
        with serial_math(params.values()):
            return method(self, params, *args, **kwargs)

    return wrapper


def _needs_graph(*tensor_lists: list[Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for ts in tensor_lists for t in ts)


def _check_keys(params: Params, other: Params, what: str) -> None:
    if other.keys() != params.keys():
        missing = sorted(set(params) - set(other))
        extra = sorted(set(other) - set(params))
        raise KeyError(f"{what} do not match the parameters: missing {missing}, unexpected {extra}")


def _number(key: str, value: Any, low: float, high: float = math.inf, high_open: bool = False) -> float:
    """``value`` as a float in ``[low, high]`` (``[low, high)`` if ``high_open``), else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(key, f"must be a number, got {value!r}")
    if value < low or value > high or (high_open and value == high):
        bracket = ")" if high_open else "]"
        raise ConfigError(key, f"must be in [{low}, {high}{bracket}, got {value!r}")
    return float(value)


class FunctionalOptimizer:
    """Interface of the functional optimizers; subclasses define ``init``, ``step`` and the state layout.

    Attributes:
        buffers: names of the per-parameter tensor dicts in the state (besides the int ``"step"``).
        lr: learning rate; may be changed between steps (learning-rate schedules).
    """

    buffers: tuple[str, ...] = ()
    lr: float

    def init(self, params: Params) -> State:
        """The state before the first step."""
        raise NotImplementedError

    def step(self, params: Params, grads: Params, state: State) -> tuple[Params, State]:
        """One update: ``(new_params, new_state)``; differentiable w.r.t. ``params`` and ``grads``."""
        raise NotImplementedError

    @_serial
    def vjp(self, params: Params, grads: Params, state: State, v: Params) -> Params:
        """``(d new_params / d grads)^T v`` at the given point, with no graph to the inputs.

        This default differentiates one ``step`` with autograd; it costs about two optimizer steps.
        """
        keys = list(params)
        with torch.enable_grad():
            g = [grads[k].detach().requires_grad_(True) for k in keys]
            p = {k: params[k].detach() for k in keys}
            new_params, _ = self.step(p, dict(zip(keys, g, strict=True)), detach_state(state))
            out = torch.autograd.grad(
                [new_params[k] for k in keys], g, [v[k] for k in keys], allow_unused=True
            )
        return {
            k: torch.zeros_like(g[i]) if o is None else o
            for i, (k, o) in enumerate(zip(keys, out, strict=True))
        }

    def state_dict(self, state: State) -> dict:
        """The state as plain data (an int and dicts of detached tensors) for a checkpoint."""
        return detach_state(state)

    def load_state_dict(self, state_dict: dict, params: Params) -> State:
        """The state saved by :meth:`state_dict`, checked against ``params``, on their device and dtype."""
        expected = {"step", *self.buffers}
        if set(state_dict) != expected:
            raise KeyError(
                f"{type(self).__name__} state needs keys {sorted(expected)}, got {sorted(state_dict)}"
            )
        step = int(state_dict["step"])
        state: State = {"step": step}
        for name in self.buffers:
            buf = state_dict[name]
            if buf:  # SGD keeps no momentum buffer before its first step
                _check_keys(params, buf, f"optimizer state '{name}'")
            state[name] = {k: buf[k].to(device=params[k].device, dtype=params[k].dtype) for k in buf}
        return state


def detach_state(state: State) -> State:
    """A copy of ``state`` whose tensors are detached from any graph (shared storage, no copy)."""
    return {
        name: {k: t.detach() for k, t in value.items()} if isinstance(value, dict) else value
        for name, value in state.items()
    }


class SGD(FunctionalOptimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay.

    Same update as ``torch.optim.SGD`` (``maximize=False``): ``d = g + weight_decay * p``; with momentum,
    ``buf = d`` at the first step and ``buf = momentum * buf + (1 - dampening) * d`` after;
    ``d = d + momentum * buf`` (Nesterov) or ``d = buf``; ``p = p - lr * d``.

    Args:
        lr: learning rate (> 0).
        momentum: momentum factor in ``[0, 1]``.
        dampening: dampening of the momentum in ``[0, 1]``.
        weight_decay: L2 penalty (>= 0).
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``, as in torch).

    Example:
        >>> opt = SGD(lr=0.1)
        >>> p = {"w": torch.tensor([1.0])}
        >>> new_p, state = opt.step(p, {"w": torch.tensor([2.0])}, opt.init(p))
        >>> new_p["w"]
        tensor([0.8000])
    """

    buffers = ("momentum_buffer",)

    def __init__(
        self,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        self.lr = _number("optim.lr", lr, 0.0)
        self.momentum = _number("optim.momentum", momentum, 0.0, 1.0)
        self.dampening = _number("optim.dampening", dampening, 0.0, 1.0)
        self.weight_decay = _number("optim.weight_decay", weight_decay, 0.0)
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ConfigError("optim.nesterov", "Nesterov momentum needs momentum > 0 and dampening = 0")
        self.nesterov = bool(nesterov)

    def __repr__(self) -> str:
        return (
            f"SGD(lr={self.lr}, momentum={self.momentum}, dampening={self.dampening}, "
            f"weight_decay={self.weight_decay}, nesterov={self.nesterov})"
        )

    def init(self, params: Params) -> State:
        # No buffer before the first step: torch starts the buffer at the first direction, not at zero.
        return {"step": 0, "momentum_buffer": {}}

    @_serial
    def step(self, params: Params, grads: Params, state: State) -> tuple[Params, State]:
        _check_keys(params, grads, "gradients")
        keys = list(params)
        p = [params[k] for k in keys]
        d = [grads[k] for k in keys]
        if self.weight_decay:
            d = torch._foreach_add(d, p, alpha=self.weight_decay)
        new_buffers: Params = {}
        if self.momentum:
            if state["step"] == 0:
                buf = [t.clone() for t in d]
            else:
                old = [state["momentum_buffer"][k] for k in keys]
                buf = torch._foreach_add(torch._foreach_mul(old, self.momentum), d, alpha=1 - self.dampening)
            new_buffers = dict(zip(keys, buf, strict=True))
            d = torch._foreach_add(d, buf, alpha=self.momentum) if self.nesterov else buf
        new_p = torch._foreach_add(p, d, alpha=-self.lr)
        return dict(zip(keys, new_p, strict=True)), {
            "step": state["step"] + 1,
            "momentum_buffer": new_buffers,
        }

    @_serial
    def vjp(self, params: Params, grads: Params, state: State, v: Params) -> Params:
        """``(d new_params / d grads)^T v = c * v``: the SGD update is linear in the gradient.

        ``c = -lr`` without momentum; with momentum the gradient enters the buffer with weight 1 at the first
        step and ``1 - dampening`` after, and Nesterov adds ``momentum`` times that.
        """
        coef = 1.0
        if self.momentum:
            in_buffer = 1.0 if state["step"] == 0 else 1.0 - self.dampening
            coef = 1.0 + self.momentum * in_buffer if self.nesterov else in_buffer
        keys = list(params)
        out = torch._foreach_mul([v[k].detach() for k in keys], -self.lr * coef)
        return dict(zip(keys, out, strict=True))


class Adam(FunctionalOptimizer):
    """Adam (and AdamW with ``decoupled_weight_decay=True``), as in ``torch.optim.Adam`` without amsgrad.

    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
    ``p = p - lr / (1 - b1^t) * m / (sqrt(v_hat + eps_root) + eps)`` with ``v_hat = v / (1 - b2^t)``. Weight
    decay adds ``weight_decay * p`` to ``g`` (Adam) or multiplies ``p`` by ``1 - lr * weight_decay`` first
    (AdamW).

    Deviation from torch.optim, for differentiability: ``sqrt`` has an infinite derivative at 0, so an entry
    whose gradient (hence ``v``) is exactly zero would turn the hypergradient into NaN (``inf * 0``).
    ``eps_root > 0`` (optax's name; e.g. ``1e-16``) puts a term inside the square root and makes the update
    smooth; it changes the update slightly, so it is 0 by default and the update is then exactly torch's.
    Whatever ``eps_root``, the square root is guarded when a graph is recorded: where its argument is 0 its
    derivative is taken as 0, which gives the exact derivative of the update there (the first moment that
    multiplies it is 0 too), so a zero gradient never yields NaN.

    Args:
        lr: learning rate (> 0).
        betas: ``(b1, b2)``, each in ``[0, 1)``.
        eps: added to the denominator (>= 0).
        weight_decay: >= 0.
        decoupled_weight_decay: AdamW-style decay.
        eps_root: added inside the square root (>= 0); see above.
    """

    buffers = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        eps_root: float = 0.0,
    ):
        self.lr = _number("optim.lr", lr, 0.0)
        if len(betas) != 2:
            raise ConfigError("optim.betas", f"needs two values (b1, b2), got {betas!r}")
        self.betas = (
            _number("optim.betas", betas[0], 0.0, 1.0, high_open=True),
            _number("optim.betas", betas[1], 0.0, 1.0, high_open=True),
        )
        self.eps = _number("optim.eps", eps, 0.0)
        self.weight_decay = _number("optim.weight_decay", weight_decay, 0.0)
        self.decoupled_weight_decay = bool(decoupled_weight_decay)
        self.eps_root = _number("optim.eps_root", eps_root, 0.0)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(lr={self.lr}, betas={self.betas}, eps={self.eps}, "
            f"weight_decay={self.weight_decay}, decoupled_weight_decay={self.decoupled_weight_decay}, "
            f"eps_root={self.eps_root})"
        )

    def init(self, params: Params) -> State:
        zeros = {
            k: torch.zeros_like(p, memory_format=torch.preserve_format).detach() for k, p in params.items()
        }
        return {"step": 0, "exp_avg": zeros, "exp_avg_sq": {k: z.clone() for k, z in zeros.items()}}

    @_serial
    def step(self, params: Params, grads: Params, state: State) -> tuple[Params, State]:
        _check_keys(params, grads, "gradients")
        keys = list(params)
        p = [params[k] for k in keys]
        g = [grads[k] for k in keys]
        m = [state["exp_avg"][k] for k in keys]
        v = [state["exp_avg_sq"][k] for k in keys]
        beta1, beta2 = self.betas
        step = state["step"] + 1

        if self.weight_decay and self.decoupled_weight_decay:
            p = torch._foreach_mul(p, 1 - self.lr * self.weight_decay)
        elif self.weight_decay:
            g = torch._foreach_add(g, p, alpha=self.weight_decay)
        m = torch._foreach_add(torch._foreach_mul(m, beta1), g, alpha=1 - beta1)
        v = torch._foreach_addcmul(torch._foreach_mul(v, beta2), g, g, value=1 - beta2)

        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        # sqrt(v / bc2 + eps_root) written as sqrt(v + eps_root * bc2) / sqrt(bc2): the same operations as
        # torch when eps_root = 0.
        radicand = torch._foreach_add(v, self.eps_root * bias_correction2) if self.eps_root else v
        graph = _needs_graph(p, g, m, v)
        root = _safe_sqrt(radicand) if graph else torch._foreach_sqrt(radicand)
        denom = torch._foreach_add(torch._foreach_div(root, math.sqrt(bias_correction2)), self.eps)
        # Not _foreach_addcdiv: in torch 2.13 its backward fails on lists holding a 1-element tensor (IndexError
        # in select()), e.g. a PReLU weight. The same operations with and without a graph, so that the exact
        # meta-step's update is bit-for-bit the plain step's.
        new_p = torch._foreach_add(p, torch._foreach_div(m, denom), alpha=-self.lr / bias_correction1)
        new_state = {
            "step": step,
            "exp_avg": dict(zip(keys, m, strict=True)),
            "exp_avg_sq": dict(zip(keys, v, strict=True)),
        }
        return dict(zip(keys, new_p, strict=True)), new_state

    @_serial
    def vjp(self, params: Params, grads: Params, state: State, v: Params) -> Params:
        """``(d new_params / d grads)^T v`` in closed form: the update is elementwise, so its Jacobian is diagonal.

        With ``m``, ``s`` the new moments, ``r = s + eps_root * bc2`` and ``den = sqrt(r) / sqrt(bc2) + eps``:
        ``d p' / d g = -lr / bc1 * [(1 - b1) / den - m (1 - b2) g / (sqrt(bc2) den^2 sqrt(r))]``, the second
        term taken as 0 where ``r == 0`` (the derivative of the guarded square root of :meth:`step`). Same values
        as the autograd default, at a fraction of its cost (a dozen foreach operations, no graph).
        """
        _check_keys(params, grads, "gradients")
        keys = list(params)
        beta1, beta2 = self.betas
        step = state["step"] + 1
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        with torch.no_grad():
            g = [grads[k].detach() for k in keys]
            vs = [v[k].detach() for k in keys]
            if self.weight_decay and not self.decoupled_weight_decay:
                g = torch._foreach_add(g, [params[k].detach() for k in keys], alpha=self.weight_decay)
            m = torch._foreach_add(torch._foreach_mul([state["exp_avg"][k] for k in keys], beta1), g, alpha=1 - beta1)
            s = torch._foreach_addcmul(
                torch._foreach_mul([state["exp_avg_sq"][k] for k in keys], beta2), g, g, value=1 - beta2
            )
            radicand = torch._foreach_add(s, self.eps_root * bias_correction2) if self.eps_root else s
            root = torch._foreach_sqrt(radicand)
            denom = torch._foreach_add(torch._foreach_div(root, math.sqrt(bias_correction2)), self.eps)
            v_over_denom = torch._foreach_div(vs, denom)
            # second term: v m g (1 - b2) / (sqrt(bc2) den^2 root)
            num = torch._foreach_mul(torch._foreach_mul(v_over_denom, m), g)
            den = torch._foreach_mul(torch._foreach_mul(denom, root), math.sqrt(bias_correction2) / (1 - beta2))
            second = [torch.where(r > 0, n / d, 0.0) for n, d, r in zip(num, den, root, strict=True)]
            out = torch._foreach_sub(torch._foreach_mul(v_over_denom, 1 - beta1), second)
            out = torch._foreach_mul(out, -self.lr / bias_correction1)
        return dict(zip(keys, out, strict=True))


class AdamW(Adam):
    """Adam with decoupled weight decay (default ``weight_decay=1e-2``), as ``torch.optim.AdamW``."""

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        eps_root: float = 0.0,
    ):
        super().__init__(lr, betas, eps, weight_decay, decoupled_weight_decay=True, eps_root=eps_root)


def _safe_sqrt(xs: list[Tensor]) -> list[Tensor]:
    """``sqrt`` whose derivative (of any order) is 0 instead of inf where the argument is 0."""
    out = []
    for x in xs:
        positive = x > 0
        out.append(torch.where(positive, torch.where(positive, x, 1.0).sqrt(), 0.0))
    return out


#: Optimizers by name, for :func:`get_optimizer`.
OPTIMIZERS: dict[str, type[FunctionalOptimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def get_optimizer(name: str, **options) -> FunctionalOptimizer:
    """The optimizer called ``name`` (``sgd``, ``adam``, ``adamw``) built with ``options``.

    Raises:
        ConfigError: unknown name (key ``optim``) or option (key ``optim.<option>``), or a value out of range.
    """
    if name not in OPTIMIZERS:
        raise ConfigError("optim", f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    cls = OPTIMIZERS[name]
    try:
        return cls(**options)
    except TypeError as err:  # unknown keyword or missing lr
        import inspect

        accepted = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
        unknown = sorted(set(options) - set(accepted))
        key = f"optim.{unknown[0]}" if unknown else "optim"
        raise ConfigError(key, f"{err}; options of {name!r} are {', '.join(accepted)}") from None
