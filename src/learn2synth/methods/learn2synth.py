"""Learn2Synth: the augmenter is trained by the hypergradient of the real loss after a synthetic update.

On a meta step the segmenter takes its usual synthetic update (φ' from the augmented synthetic batch only)
and the augmenter takes one step along d loss_real(φ'(θ)) / dθ; real images never produce a gradient for φ.
Between meta steps (``meta.meta_every``) and during ``meta.warmup`` the segmenter trains on augmented
synthetic images with the augmenter frozen. The augmenter either corrupts synthesized images (parametric,
residual) or renders them itself from label maps with learned synthesis priors (learned_priors); either way a
batch is one fixed draw, rendered inside the synthetic loss so that the loss is differentiable in θ. After the
step, ``augmenter.max_values`` caps learned values and the guard (``augmenter.check_every``) may revert θ.
"""

import torch

from ..meta.hypergrad import meta_step


def augmented_batch(run):
    """One fixed random draw of an augmented synthetic batch, as ``render() -> (image, target)``: rendering again
    replays the same draw with the augmenter's current parameters (differentiably)."""
    aug = run.augmenter
    if aug.renders_synthesis:
        labels = run.label_batch()
        draw = aug.sample(labels, run.generator)
        return lambda: aug.apply(labels, draw)
    x, y = run.synth_batch()
    draws = aug.sample(x, run.generator)
    return lambda: (aug.apply(x, draws), y)


def step(run, step: int) -> dict:
    cfg = run.config.meta
    render = augmented_batch(run)
    if step < cfg.warmup or step % cfg.meta_every:
        with torch.no_grad():
            xa, y = render()
        loss = run.update(xa, y)
        guard = _guard(run, step)
        return {"loss_synth": loss, **run.augmenter.learned_values(), **guard}
    xr, yr = run.real_batch()
    reference_loss = None
    if cfg.debias:  # an independent synthetic batch, augmented with the current (fixed) theta
        with torch.no_grad():
            xa2, y2 = augmented_batch(run)()
        reference_loss = lambda p: run.loss(p, xa2, y2)  # noqa: E731
    theta = [p for p in run.augmenter.parameters() if p.requires_grad]
    result = meta_step(
        run.net, run.params, run.opt, run.opt_state,
        synth_loss=lambda p: run.loss(p, *render()),
        real_loss=lambda p: run.loss(p, xr, yr),
        theta=theta, mode=cfg.mode, alpha=cfg.alpha, fd_eps=cfg.fd_eps, reduce=run.reduce,
        reference_loss=reference_loss,
    )
    # a non-finite loss or hypergradient skips both updates: segmenter and augmenter stay as they were
    if run.accept([result.loss_synth, result.loss_real], [*result.new_params.values(), *result.hypergrads]):
        run.params, run.opt_state = result.new_params, result.new_opt_state
        run.aug_opt.zero_grad(set_to_none=True)
        for p, g in zip(theta, result.hypergrads, strict=True):
            p.grad = g
        run.aug_opt.step()
        run.augmenter.bound_(run.config.augmenter.max_values)  # valid ranges and augmenter.max_values
    guard = _guard(run, step)
    return {"loss_synth": result.loss_synth, "loss_real": result.loss_real, **run.augmenter.learned_values(), **guard}


def _guard(run, step: int) -> dict:
    return {} if run.guard is None else run.guard.after_step(run, step)
