"""Learn2Synth: the augmenter is trained by the hypergradient of the real loss after a synthetic update.

On a meta step the segmenter takes its usual synthetic update (φ' from the augmented synthetic batch only)
and the augmenter takes one step along d loss_real(φ'(θ)) / dθ; real images never produce a gradient for φ.
Between meta steps (``meta.meta_every``) and during ``meta.warmup`` the segmenter trains on augmented
synthetic images with the augmenter frozen.
"""

import torch

from ..meta.hypergrad import meta_step


def step(run, step: int) -> dict:
    cfg = run.config.meta
    x, y = run.synth_batch()
    draws = run.augmenter.sample(x, run.generator)
    if step < cfg.warmup or step % cfg.meta_every:
        with torch.no_grad():
            xa = run.augmenter.apply(x, draws)
        return {"loss_synth": run.update(xa, y), **run.augmenter.learned_values()}
    xr, yr = run.real_batch()
    reference_loss = None
    if cfg.debias:  # an independent synthetic batch, augmented with the current (fixed) theta
        x2, y2 = run.synth_batch()
        with torch.no_grad():
            xa2 = run.augmenter.apply(x2, run.augmenter.sample(x2, run.generator))
        reference_loss = lambda p: run.loss(p, xa2, y2)  # noqa: E731
    theta = [p for p in run.augmenter.parameters() if p.requires_grad]
    result = meta_step(
        run.net, run.params, run.opt, run.opt_state,
        synth_loss=lambda p: run.loss(p, run.augmenter.apply(x, draws), y),
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
    return {"loss_synth": result.loss_synth, "loss_real": result.loss_real, **run.augmenter.learned_values()}
