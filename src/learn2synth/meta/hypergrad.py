"""The meta-step: one inner update of the segmenter and the hypergradient of the real loss after it.

Notation (see DESIGN.md): ``phi`` are the segmenter's parameters, ``theta`` the augmenter's. One meta-step does

    g    = d loss_synth(phi, theta) / d phi
    phi' = update(phi, g, state)                       (the functional optimizer, meta.optim)
    hypergrads = d [alpha * loss_real(phi'(theta))] / d theta

and keeps ``phi'`` (detached): the real images never change ``phi``. ``phi'`` and the optimizer state are exactly
those of :func:`plain_step` on ``loss_synth`` alone. Two ways to get the hypergradient:

- ``"exact"``: ``g`` is computed with ``create_graph=True``; with ``v = d alpha*loss_real / d phi'`` and
  ``w = (d phi' / d g)^T v`` (``opt.vjp``), ``hypergrads = (d g / d theta)^T w`` by a second-order backward from
  ``g``. This is the derivative through the update, without recording the optimizer in the graph.
- ``"fd"`` (DARTS, Liu et al. 2019, https://arxiv.org/abs/1806.09055): with ``v = d alpha*loss_real / d phi'``
  and ``w = (d phi' / d g)^T v`` (``opt.vjp``), ``hypergrads = (d/d theta) [w . g(phi, theta)]`` is estimated
  by the central difference ``(grad_theta loss_synth(phi + eps w) - grad_theta loss_synth(phi - eps w)) / 2 eps``,
  ``eps = 0.01 / ||w||`` by default. No second-order graph, so its memory stays close to a plain step's.
- ``"fd_onesided"``: the same derivative by the forward difference
  ``(grad_theta loss_synth(phi + eps w) - grad_theta loss_synth(phi)) / eps``. The second term comes out of the
  synthetic backward at ``phi`` that the update needs anyway (``theta`` is upstream of the image, so the backward
  to ``phi`` reaches it for the price of the backward through the augmenter), so ONE perturbed pass replaces the
  two of ``"fd"``: synthetic + real + one perturbed pass instead of synthetic + real + two. Its truncation error
  is first order in ``eps`` (``"fd"``: second order), so its default step is smaller: ``eps = 0.001 / ||w||``
  (:data:`FD_STEP`; on the meta-step benchmark's problems in float32 the relative error to the exact mode is
  1.2% at 0.01, 0.2% at 0.001 and 2% at 0.0001, where rounding takes over). Tested against the exact mode and
  against central differences of the outer objective (tests/meta/test_hypergrad.py); the benchmark reports its
  cosine similarity to the exact mode.

The losses are closures over a FIXED batch and augmentation draw (replay the same noise, generator state, ...):
``synth_loss(phi)`` evaluates the augmenter (whose parameters are ``theta``) then the segmenter at ``phi``, e.g.
``loss_fn(functional_call(net, phi, (augmenter(x, noise),)), y)``; ``real_loss(phi)`` evaluates the segmenter on
real data. In ``"fd"`` mode ``synth_loss`` is evaluated three times (``"fd_onesided"``: twice); the global RNG
state is replayed so that dropout draws the same mask each time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from learn2synth.errors import ConfigError
from learn2synth.meta.optim import FunctionalOptimizer, detach_state, serial_math
from learn2synth.rng import capture_rng_state, restore_rng_state

__all__ = ["DeferredHypergrad", "MetaResult", "StepResult", "finish_deferred", "meta_step", "plain_step", "MODES"]

Params = dict[str, Tensor]
State = dict[str, Any]
LossOfParams = Callable[[Params], Tensor]
Reduce = Callable[[list[Tensor]], list[Tensor]]

MODES = ("exact", "fd", "fd_onesided")
#: default norm of the fd modes' perturbation ``eps * w`` (``eps = FD_STEP[mode] / ||w||``)
FD_STEP = {"fd": 0.01, "fd_onesided": 0.001}


@dataclass
class StepResult:
    """Output of :func:`plain_step`.

    Attributes:
        new_params: updated parameters: detached from any graph, leaves with ``requires_grad=True``.
        new_opt_state: optimizer state after the step (detached).
        loss: the loss at the parameters before the step.
        grads: the (reduced) gradient the step took, detached.
    """

    new_params: Params
    new_opt_state: State
    loss: float
    grads: Params | None = None


@dataclass
class MetaResult:
    """Output of :func:`meta_step`.

    Attributes:
        new_params: ``phi'``, the plain update from the synthetic loss: detached, leaves with
            ``requires_grad=True``.
        new_opt_state: optimizer state after that update (detached).
        hypergrads: ``d [alpha * loss_real(phi'(theta))] / d theta``, one tensor per ``theta`` entry (zeros
            for an entry the losses do not depend on).
        loss_synth: synthetic loss at ``phi``.
        loss_real: real loss at ``phi'`` (without ``alpha``).
        synth_grads: the (reduced) synthetic gradient at ``phi`` that the update took, detached; None in the fd
            modes without ``defer`` (there it is released before the perturbed passes, for their peak memory).
        deferred: with ``defer=True``, what :func:`finish_deferred` needs to produce ``hypergrads`` (then None)
            once the reference gradient is known.
    """

    new_params: Params
    new_opt_state: State
    hypergrads: list[Tensor] | None
    loss_synth: float
    loss_real: float
    synth_grads: Params | None = None
    deferred: DeferredHypergrad | None = None


@dataclass
class DeferredHypergrad:
    """An fd-mode meta-step whose hypergradient waits for its reference gradient (``meta.debias_reference:
    next``).

    The debiased outer objective's gradient at ``phi'`` is ``alpha * (d loss_real / d phi' - g_ref)``, with
    ``g_ref`` the synthetic gradient of an independent batch at ``phi'``. The next training step computes such a
    gradient anyway, for its own update (its batch is drawn independently, at ``phi'``); waiting one step for it
    saves the extra synthetic forward and backward pass that ``reference_loss`` costs. Holds ``phi``, its synthetic
    gradient and optimizer state (for ``opt.vjp``), ``v`` = d alpha*loss_real / d phi' (reduced), the one-sided base
    point (None: central differences), and the RNG state of the synthetic pass (replayed by the perturbed passes).
    """

    phi: Params
    grads: Params
    opt_state: State
    v: Params
    base: list[Tensor] | None
    rng: dict
    alpha: float
    fd_eps: float | None

    def state_dict(self, opt: FunctionalOptimizer) -> dict:
        """Tensors, numbers and dicts only (a ``weights_only`` checkpoint loads it)."""
        return {"phi": {k: p.detach() for k, p in self.phi.items()}, "grads": self.grads,
                "opt_state": opt.state_dict(self.opt_state), "v": self.v, "base": self.base, "rng": self.rng,
                "alpha": self.alpha, "fd_eps": self.fd_eps}

    @classmethod
    def from_state_dict(cls, state: dict, opt: FunctionalOptimizer, device=None) -> DeferredHypergrad:
        move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        phi = move(state["phi"])
        base = None if state["base"] is None else [b.to(device) for b in state["base"]]
        return cls(phi, move(state["grads"]), opt.load_state_dict(state["opt_state"], phi), move(state["v"]), base,
                   state["rng"], float(state["alpha"]), state["fd_eps"])


def _reduced(reduce: Reduce | None, tensors: list[Tensor]) -> list[Tensor]:
    return tensors if reduce is None else list(reduce(tensors))


def _leaves(params: Params) -> Params:
    """``params`` itself if every entry already requires grad (no copy), else detached leaves that do."""
    if all(p.requires_grad for p in params.values()):
        return params
    return {k: p.detach().requires_grad_(True) for k, p in params.items()}


def _grads(loss: Tensor, inputs: Sequence[Tensor], create_graph: bool = False) -> list[Tensor]:
    grads = torch.autograd.grad(loss, inputs, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads, strict=True)]


def _detached_leaves(params: Params) -> Params:
    return {k: p.detach().requires_grad_(True) for k, p in params.items()}


def _check_net(net: nn.Module) -> None:
    """Refuse modules whose forward pass updates buffers (batch norm running statistics in training mode)."""
    for name, module in net.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training and module.track_running_stats:
            raise ConfigError(
                "net.norm",
                f"module {name!r} is a batch norm that updates running statistics at every forward pass; "
                "the meta-step evaluates the network several times per step, use instance norm or none",
            )


def plain_step(
    net: nn.Module, params: Params, opt: FunctionalOptimizer, opt_state: State, loss: LossOfParams,
    reduce: Reduce | None = None,
) -> StepResult:
    """One optimizer step on ``loss(params)``: the update of the methods without a meta-step.

    Args:
        net: the module ``params`` belong to (``loss`` evaluates it with ``functional_call``).
        params: parameters, by name.
        opt: functional optimizer.
        opt_state: its state.
        loss: ``params -> scalar loss``.
        reduce: averages a list of tensors over processes (see :mod:`learn2synth.distributed`); None: one process.
    """
    _check_net(net)
    phi = _leaves(params)
    keys = list(phi)
    value = loss(phi)
    grads = _reduced(reduce, _grads(value, list(phi.values())))
    loss_value = float(value.detach())
    del value  # parts of the graph not on the way to phi (e.g. an augmenter) hold memory until released
    with torch.no_grad():
        new_params, new_state = opt.step(phi, dict(zip(keys, grads, strict=True)), opt_state)
    return StepResult(_detached_leaves(new_params), detach_state(new_state), loss_value,
                      dict(zip(keys, [g.detach() for g in grads], strict=True)))


def meta_step(
    net: nn.Module,
    params: Params,
    opt: FunctionalOptimizer,
    opt_state: State,
    synth_loss: LossOfParams,
    real_loss: LossOfParams,
    theta: Sequence[Tensor],
    mode: str = "exact",
    alpha: float = 1.0,
    fd_eps: float | None = None,
    reduce: Reduce | None = None,
    reference_loss: LossOfParams | None = None,
    defer: bool = False,
) -> MetaResult:
    """Inner update of ``phi`` on the synthetic loss and hypergradient of the real loss w.r.t. ``theta``.

    Args:
        net: the segmenter ``params`` belong to (the losses evaluate it with ``functional_call``).
        params: ``phi``, by name. If every entry requires grad they are used as they are, else as detached
            leaves; they are never modified and never receive a ``.grad``.
        opt: functional optimizer of ``phi``.
        opt_state: its state.
        synth_loss: ``phi -> loss_synth(phi, theta)`` on a fixed synthetic batch and augmentation draw; depends
            on ``theta`` through the augmenter's parameters.
        real_loss: ``phi' -> loss_real(phi')``.
        theta: augmenter parameters (leaf tensors with ``requires_grad=True``).
        mode: ``"exact"`` (second-order autograd), ``"fd"`` (central finite differences, no second-order graph)
            or ``"fd_onesided"`` (forward difference: one perturbed pass instead of two).
        alpha: weight of the real loss; the hypergradients are linear in it.
        fd_eps: step along ``w`` in the fd modes (the perturbation is ``fd_eps * w``); default
            ``FD_STEP[mode] / ||w||`` (0.01 for ``"fd"``, 0.001 for ``"fd_onesided"``).
        reduce: averages a list of tensors over processes, differentiably (data-parallel training; see
            :mod:`learn2synth.distributed`). It is applied to the inner gradient (so ``phi'`` follows the global
            batch and, in exact mode, the hypergradient flows through the average), to ``v`` in fd mode, and to
            the hypergradients. ``None``: one process.
        reference_loss: ``phi' -> loss`` on an independent synthetic batch whose images do not depend on
            ``theta``, or None. When given, the outer objective is ``alpha * (loss_real - loss_reference)`` at
            ``phi'``: the hypergradient then matches the synthetic to the real gradient instead of aligning them
            (see :func:`_objective`).
        defer: fd modes only, without ``reference_loss``: return ``hypergrads=None`` and ``deferred``, from which
            :func:`finish_deferred` computes the debiased hypergradient once the reference gradient at ``phi'``
            is known (the next step's synthetic gradient).

    Returns:
        :class:`MetaResult`.
    """
    if mode not in MODES:
        raise ConfigError("meta.mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    if defer and (mode == "exact" or reference_loss is not None):
        raise ConfigError("meta.debias_reference", "next (a deferred reference) needs meta.mode fd or fd_onesided")
    if fd_eps is not None and not fd_eps > 0:
        raise ConfigError("meta.fd_eps", f"must be > 0, got {fd_eps!r}")
    theta = list(theta)
    if not all(t.requires_grad for t in theta):
        raise ValueError("every theta tensor must require grad")
    _check_net(net)
    phi = _leaves(params)
    if mode == "exact":
        return _exact(phi, opt, opt_state, synth_loss, real_loss, theta, alpha, reduce, reference_loss)
    return _finite_difference(phi, opt, opt_state, synth_loss, real_loss, theta, alpha, fd_eps, reduce,
                              reference_loss, onesided=mode == "fd_onesided", defer=defer)


def _objective(real_loss: LossOfParams, reference_loss: LossOfParams | None, new_params: Params):
    """(outer objective at phi', real loss value).

    With plain Learn2Synth the objective is the real loss. Its expected hypergradient, where the augmented
    synthesis already matches the real data, is ``-(1/2) d||E g||^2 / d theta`` (g the preconditioned inner
    gradient) rather than zero, so theta drifts toward corruptions that change the size of the synthetic gradient.
    Subtracting the loss of an independent synthetic batch at phi' turns the first-order objective into
    ``(1/2) ||E g - E g_real||^2``, which is stationary at a match.
    """
    loss_r = real_loss(new_params)
    if reference_loss is None:
        return loss_r, loss_r
    return loss_r - reference_loss(new_params), loss_r


def _exact(
    phi: Params,
    opt: FunctionalOptimizer,
    opt_state: State,
    synth_loss: LossOfParams,
    real_loss: LossOfParams,
    theta: list[Tensor],
    alpha: float,
    reduce: Reduce | None,
    reference_loss: LossOfParams | None = None,
) -> MetaResult:
    keys = list(phi)
    loss_s = synth_loss(phi)
    grads = _reduced(reduce, _grads(loss_s, list(phi.values()), create_graph=True))
    loss_synth = float(loss_s.detach())
    del loss_s  # the graph lives on through grads
    # phi' is the plain update (no graph through the optimizer): the chain rule is applied by hand below, with
    # v = d alpha*loss_real / d phi' and w = (d phi' / d g)^T v, so that hypergrads = (d g / d theta)^T w.
    # Same values as differentiating through opt.step, without recording the optimizer, and the real graph is
    # released before the second-order backward instead of being held through it.
    with torch.no_grad():
        new_params, new_state = opt.step(phi, dict(zip(keys, [g.detach() for g in grads], strict=True)), opt_state)
    new_params = _detached_leaves(new_params)
    objective, loss_r = _objective(real_loss, reference_loss, new_params)
    v = dict(zip(keys, _grads(alpha * objective, list(new_params.values())), strict=True))
    loss_real = float(loss_r.detach())
    del loss_r, objective
    w = opt.vjp(phi, {k: g.detach() for k, g in zip(keys, grads, strict=True)}, opt_state, v)
    del v
    # Second-order backward from the inner gradient; under `reduce` it runs back through the differentiable
    # average, as it did through phi'.
    pairs = [(g, w[k]) for k, g in zip(keys, grads, strict=True) if g.requires_grad]
    synth_grads = {k: g.detach() for k, g in zip(keys, grads, strict=True)}
    del grads, w
    if pairs:
        outputs, vectors = zip(*pairs, strict=True)
        del pairs
        found = torch.autograd.grad(outputs, theta, vectors, allow_unused=True)
        del outputs, vectors
        hypergrads = [torch.zeros_like(t) if h is None else h for t, h in zip(theta, found, strict=True)]
    else:  # no inner gradient depends on anything that requires grad
        hypergrads = [torch.zeros_like(t) for t in theta]
    return MetaResult(
        new_params=new_params,
        new_opt_state=detach_state(new_state),
        hypergrads=_reduced(reduce, hypergrads),
        loss_synth=loss_synth,
        loss_real=loss_real,
        synth_grads=synth_grads,
    )


def _finite_difference(
    phi: Params,
    opt: FunctionalOptimizer,
    opt_state: State,
    synth_loss: LossOfParams,
    real_loss: LossOfParams,
    theta: list[Tensor],
    alpha: float,
    fd_eps: float | None,
    reduce: Reduce | None,
    reference_loss: LossOfParams | None = None,
    onesided: bool = False,
    defer: bool = False,
) -> MetaResult:
    keys = list(phi)
    # Replaying the RNG makes the synth_loss evaluations draw the same dropout mask (if any), and leaves the RNG
    # where the exact mode leaves it (after one synthetic and one real evaluation).
    rng_before_synth = capture_rng_state()
    loss_s = synth_loss(phi)
    if onesided:  # one backward gives d loss_synth / d phi (the update) and d loss_synth / d theta (the base point)
        both = _grads(loss_s, [*phi.values(), *theta])
        grads_phi, base = both[: len(keys)], both[len(keys):]
        del both
    else:
        grads_phi, base = _grads(loss_s, list(phi.values())), None
    grads = dict(zip(keys, _reduced(reduce, grads_phi), strict=True))
    del grads_phi
    # Release the graph now: its augmenter part (not on the way to phi, so not freed by autograd.grad) would
    # otherwise stay in memory during the perturbed passes.
    loss_synth = float(loss_s.detach())
    del loss_s
    with torch.no_grad():
        new_params, new_state = opt.step(phi, grads, opt_state)
    new_params = _detached_leaves(new_params)
    objective, loss_r = _objective(real_loss, reference_loss, new_params)
    v = dict(zip(keys, _reduced(reduce, _grads(alpha * objective, list(new_params.values()))), strict=True))
    loss_real = float(loss_r.detach())
    del loss_r, objective
    phi = {k: p.detach() for k, p in phi.items()}
    result = MetaResult(new_params=new_params, new_opt_state=detach_state(new_state), hypergrads=None,
                        loss_synth=loss_synth, loss_real=loss_real)
    if defer:
        result.synth_grads = grads
        result.deferred = DeferredHypergrad(phi, grads, opt_state, v, base, rng_before_synth, alpha, fd_eps)
        return result
    w = opt.vjp(phi, grads, opt_state, v)
    del v, grads  # not held through the perturbed passes (peak memory)
    result.hypergrads = _perturbed_hypergrads(phi, w, base, rng_before_synth, fd_eps, synth_loss, theta, reduce)
    return result


def finish_deferred(pending: DeferredHypergrad, reference_grads: Params, synth_loss: LossOfParams,
                    theta: Sequence[Tensor], opt: FunctionalOptimizer, reduce: Reduce | None = None) -> list[Tensor]:
    """The hypergradient of a ``defer=True`` meta-step, debiased by ``reference_grads``: the (reduced) synthetic
    gradient at that step's ``phi'`` of a batch independent of its own (the next step's). ``synth_loss`` must
    replay that step's batch and draw, with ``theta`` at the values that step used; the result equals
    :func:`meta_step` with a ``reference_loss`` whose gradient at ``phi'`` is ``reference_grads``."""
    v = {k: pending.v[k] - pending.alpha * reference_grads[k] for k in pending.v}
    w = opt.vjp(pending.phi, pending.grads, pending.opt_state, v)
    return _perturbed_hypergrads(pending.phi, w, pending.base, pending.rng, pending.fd_eps, synth_loss, list(theta),
                                 reduce)


def _perturbed_hypergrads(phi: Params, w: Params, base: list[Tensor] | None, rng: dict, fd_eps: float | None,
                          synth_loss: LossOfParams, theta: list[Tensor], reduce: Reduce | None) -> list[Tensor]:
    """``(d/d theta) [w . g(phi, theta)]`` by finite differences along ``w`` (``w = (d phi' / d g)^T v``): one
    perturbed pass against the base point ``base`` (d loss_synth / d theta at phi), or two (central) without one.
    ``rng`` is replayed for each pass; the global RNG is left as it was found."""
    keys = list(phi)
    w_list = [w[k] for k in keys]
    del w
    with serial_math(w_list):
        norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(w_list)))) if w_list else 0.0
    if norm == 0.0 or not math.isfinite(norm):
        # the outer objective is flat in phi' (or w overflowed): nothing to difference
        return [torch.zeros_like(t) for t in theta]
    onesided = base is not None
    eps = fd_eps if fd_eps is not None else FD_STEP["fd_onesided" if onesided else "fd"] / norm
    phi_list = [phi[k] for k in keys]
    rng_now = capture_rng_state()
    sides = []
    for sign in (1.0,) if onesided else (1.0, -1.0):
        with torch.no_grad(), serial_math(w_list):
            shifted = dict(zip(keys, torch._foreach_add(phi_list, w_list, alpha=sign * eps), strict=True))
        restore_rng_state(rng)
        sides.append(_grads(synth_loss(shifted), theta))
        del shifted
    restore_rng_state(rng_now)
    if onesided:
        return _reduced(reduce, list(torch._foreach_div(torch._foreach_sub(sides[0], base), eps)))
    return _reduced(reduce, list(torch._foreach_div(torch._foreach_sub(sides[0], sides[1]), 2.0 * eps)))
