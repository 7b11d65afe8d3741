"""SynthSeg-style training: synthetic images only, fixed (random but not learned) synthesis."""


def step(run, step: int) -> dict:
    x, y = run.synth_batch()
    return {"loss_synth": run.update(x, y)}
