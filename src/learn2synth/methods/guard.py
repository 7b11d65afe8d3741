"""A validation check on the augmenter: undo what made the segmenter worse on held-out real examples.

The hypergradient follows a noisy one-step estimate; it can drive an augmentation far from the data (a noise
sigma from 0.01 to 0.98) while the segmenter gets worse. Every ``augmenter.check_every`` steps the guard scores
the segmenter (mean Dice) on the held-out real examples (the validation pool, never used for training). If the
score fell by more than ``augmenter.check_tolerance`` since the last check, the augmenter and its optimizer state
go back to the state accepted at the last good check and the augmenter's learning rate is halved; else the
current state becomes the accepted one. The segmenter is never reverted. The guard's state is checkpointed, so
a resumed run decides exactly as an uninterrupted one.
"""

from __future__ import annotations

import copy


class AugmenterGuard:
    def __init__(self, pool, every: int, tolerance: float):
        self.pool, self.every, self.tolerance = pool, every, tolerance
        self.reference: float | None = None  # score at the last check
        self.accepted: dict | None = None  # augmenter and optimizer state at the last accepted check
        self.reverted = 0

    def score(self, run) -> float:
        return run.evaluate(self.pool)["dice_mean"]

    def after_step(self, run, step: int) -> dict:
        """Check after ``step`` when one is due; returns the values to log ({} between checks)."""
        if (step + 1) % self.every:
            return {}
        score = self.score(run)
        if self.reference is not None and score < self.reference - self.tolerance:
            run.augmenter.load_state_dict(self.accepted["augmenter"])
            run.aug_opt.load_state_dict(copy.deepcopy(self.accepted["aug_opt"]))  # Adam updates its state in place
            for group in run.aug_opt.param_groups:
                for key in ("lr", "base_lr"):  # base_lr: what augmenter.lr_final's decay scales
                    if key in group:
                        group[key] *= 0.5
            self.reverted += 1
        else:
            self.accepted = {"augmenter": {k: v.detach().clone() for k, v in run.augmenter.state_dict().items()},
                             "aug_opt": copy.deepcopy(run.aug_opt.state_dict())}
        self.reference = score
        return {"aug_check_dice": score, "aug_reverted": float(self.reverted),
                "aug_lr": float(run.aug_opt.param_groups[0]["lr"])}

    def state_dict(self) -> dict:
        return {"reference": self.reference, "accepted": self.accepted, "reverted": self.reverted}

    def load_state_dict(self, state: dict) -> None:
        self.reference, self.accepted, self.reverted = state["reference"], state["accepted"], int(state["reverted"])
