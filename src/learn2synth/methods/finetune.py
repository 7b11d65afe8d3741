"""SynthSeg training for the first ``finetune_from`` share of the steps, then fine-tuning on real examples."""

from . import real, synthseg


def step(run, step: int) -> dict:
    if step < int(run.config.finetune_from * run.config.steps):
        return synthseg.step(run, step)
    return real.step(run, step)
