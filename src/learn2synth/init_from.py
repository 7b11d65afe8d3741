"""``init_from``: start a run from another run's segmenter weights (parameters only, fresh optimizer state).

The network the config describes must be the one the checkpoint holds; otherwise the run is refused before any
data is read, naming the file and what differs (class count, channels, ...). A resumed run never reads
``init_from`` again: it continues from its own checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .checkpoint import load_checkpoint, resolve_checkpoint
from .errors import InputError

# (config section, key, what the message calls it): the settings that shape the segmenter
NETWORK_KEYS = [("data", "n_classes", "class count"), ("data", "spatial_dims", "spatial dims"),
                ("net", "channels", "channels"), ("net", "strides", "strides"),
                ("net", "num_res_units", "residual units"), ("net", "norm", "norm"), ("net", "act", "activation")]


def network_differences(stored: dict, config) -> list[str]:
    """What differs between a stored config (dict) and ``config`` in the settings that shape the network."""
    out = []
    for section, key, name in NETWORK_KEYS:
        mine = getattr(getattr(config, section), key)
        theirs = (stored.get(section) or {}).get(key, mine)
        if theirs != mine:
            out.append(f"{name} {theirs} in the checkpoint, {mine} in this config")
    return out


def load_init_params(path: str | os.PathLike, config) -> tuple[Path, dict[str, torch.Tensor]]:
    """(checkpoint file, its segmenter parameters), after checking they fit the network ``config`` describes."""
    path = resolve_checkpoint(path)
    checkpoint = load_checkpoint(path, map_location="cpu")
    params = checkpoint["state"].get("params") if isinstance(checkpoint["state"], dict) else None
    if not isinstance(params, dict):
        raise InputError(path, "checkpoint holds no segmenter parameters (state['params'])")
    differences = network_differences(checkpoint["config"], config)
    if differences:
        raise InputError(path, "init_from: the network differs from this config's: " + "; ".join(differences))
    return path, params


def copy_params(path: Path, source: dict[str, torch.Tensor], params: dict[str, torch.Tensor]) -> None:
    """Copy ``source`` into ``params`` in place; names and shapes must match exactly."""
    if set(source) != set(params):
        raise InputError(path, "init_from: checkpoint parameters are named differently from this config's network")
    wrong = [k for k in params if source[k].shape != params[k].shape]
    if wrong:
        k = wrong[0]
        raise InputError(path, f"init_from: parameter {k} has shape {tuple(source[k].shape)} in the checkpoint, "
                               f"{tuple(params[k].shape)} in this config's network")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(source[k].to(p.device, p.dtype))
