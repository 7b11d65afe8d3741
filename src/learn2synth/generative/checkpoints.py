"""Load a trained generator from its run folder or checkpoint (written by ``learn2synth labelgen|spade train``).

A generator checkpoint is an ordinary learn2synth checkpoint whose ``extra["kind"]`` says which generator it
holds and whose ``config`` rebuilds it; only the generator's weights are read (not its optimizers or critic).
"""

from __future__ import annotations

import torch

from ..checkpoint import load_checkpoint, resolve_checkpoint
from ..config import from_dict
from ..errors import InputError


def _kinds():
    from .labelgen import LabelGenConfig, LabelGenerator
    from .spade import SpadeConfig, SpadeGenerator

    return {"labelgen": (LabelGenConfig, LabelGenerator), "spade": (SpadeConfig, SpadeGenerator)}


def load_generator(path, kind: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The trained :class:`~.labelgen.LabelGenerator` (``kind="labelgen"``) or :class:`~.spade.SpadeGenerator`
    (``"spade"``) of ``path`` (a checkpoint file or run folder), in eval mode on ``device``."""
    path = resolve_checkpoint(path)
    ckpt = load_checkpoint(path, map_location=device)
    found = ckpt["extra"].get("kind")
    if found != kind:
        what = f"a {found} generator" if found else "not a generator checkpoint (a segmenter's?)"
        raise InputError(path, f"is {what}, not a {kind} generator")
    config_cls, model_cls = _kinds()[kind]
    model = model_cls(from_dict(config_cls, ckpt["config"]))
    model.load_state_dict(ckpt["state"]["model"])
    return model.to(device).eval()
