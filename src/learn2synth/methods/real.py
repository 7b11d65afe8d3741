"""Supervised training on the real labeled examples only, with a mild random deformation as augmentation."""


def step(run, step: int) -> dict:
    x, y = run.real_batch(augment=True)
    return {"loss_real": run.update(x, y)}
