"""Explicit random number generators: seeding, derived seeds, and capture/restore of every RNG state.

learn2synth draws its own random numbers from ``torch.Generator`` objects passed around explicitly
(``make_generator``). The global generators (torch, CUDA, NumPy, Python's ``random``) are only seeded for
third-party code (``seed_everything``), and captured with the named generators so that a resumed run
continues exactly where it stopped (``capture_rng_state`` / ``restore_rng_state``).

The captured state holds only tensors, ints, floats, strings, lists and dicts, so a checkpoint that contains
it loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

__all__ = ["make_generator", "derive_seed", "seed_everything", "capture_rng_state", "restore_rng_state"]


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Return a new ``torch.Generator`` on ``device`` seeded with ``seed``.

    Parameters
    ----------
    seed : int
        Seed, ``0 <= seed < 2**64``.
    device : str or torch.device
        Device of the generator; tensors drawn with it must live on the same device type.

    Examples
    --------
    >>> a = torch.rand(3, generator=make_generator(0))
    >>> b = torch.rand(3, generator=make_generator(0))
    >>> bool(torch.equal(a, b))
    True
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def derive_seed(seed: int, *keys: int | str) -> int:
    """Derive a seed for an independent stream from a base seed and keys, stable across runs and platforms.

    Uses BLAKE2b over a canonical encoding of the arguments (not Python's ``hash``, which is salted per
    process), so ``derive_seed(seed, "synth", rank)`` is the same on every machine and in every run.

    Parameters
    ----------
    seed : int
        Base seed.
    *keys : int or str
        What the stream is for, e.g. ``"synth"`` and a rank. ``1`` and ``"1"`` give different seeds.

    Returns
    -------
    int
        A seed in ``[0, 2**63)``, usable by ``torch.Generator.manual_seed``.

    Examples
    --------
    >>> derive_seed(0, "synth", 1) == derive_seed(0, "synth", 1)
    True
    >>> derive_seed(0, "synth", 1) == derive_seed(0, "synth", 2)
    False
    """
    parts = []
    for value in (seed, *keys):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise TypeError(f"derive_seed keys must be int or str, got {type(value).__name__}")
        parts.append(f"{type(value).__name__}:{len(str(value))}:{value}")
    digest = hashlib.blake2b("|".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_everything(seed: int) -> None:
    """Seed the global generators of Python, NumPy, torch and CUDA, for third-party code only.

    learn2synth itself draws from explicit generators (``make_generator``); this makes library code that uses
    the global generators (e.g. weight initialization, MONAI) repeatable too.

    Parameters
    ----------
    seed : int
        Seed; NumPy receives a seed derived from it (NumPy needs one below ``2**32``).
    """
    random.seed(seed)
    np.random.seed(derive_seed(seed, "numpy") % 2**32)  # noqa: NPY002 (the global is the point)
    torch.manual_seed(seed)  # also seeds every CUDA device


def capture_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """Capture the state of every random number generator, in a ``weights_only``-loadable form.

    Parameters
    ----------
    generators : dict of str to torch.Generator, optional
        Named explicit generators, e.g. ``{"synth": g_synth, "data": g_data}``.

    Returns
    -------
    dict
        ``{"torch": tensor, "cuda": [tensor per device], "numpy": dict, "python": dict, "generators": dict}``.
        ``"cuda"`` is empty when CUDA is not available.
    """
    np_state = np.random.get_state(legacy=False)  # noqa: NPY002 (the global is the point)
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        # gauss_next is None or a float: stored as a list of zero or one float to stay within plain types
        "python": {"version": version, "internal": list(internal), "gauss_next": [] if gauss_next is None
                   else [gauss_next]},
        "generators": {name: gen.get_state() for name, gen in (generators or {}).items()},
    }


def restore_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore the generators captured by ``capture_rng_state``.

    Parameters
    ----------
    state : dict
        Output of ``capture_rng_state``, possibly after a ``torch.save`` / ``torch.load`` round trip.
    generators : dict of str to torch.Generator, optional
        Named generators to restore in place. Each must be present in ``state``; generators in ``state`` that
        are not named here are ignored.

    Notes
    -----
    CUDA states are restored for the devices present both in ``state`` and on this machine, so a state
    captured on CPU restores on a GPU machine (the GPU generators are left as they are) and vice versa.
    """
    generators = generators or {}
    missing = sorted(set(generators) - set(state["generators"]))
    if missing:
        raise KeyError(f"no saved RNG state for generator(s) {', '.join(map(repr, missing))}")
    torch.set_rng_state(state["torch"].cpu())
    if torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), device)
    np_state = state["numpy"]
    np.random.set_state({  # noqa: NPY002 (the global is the point)
        "bit_generator": np_state["bit_generator"],
        "state": {"key": np_state["key"].cpu().numpy().astype(np.uint32), "pos": np_state["pos"]},
        "has_gauss": np_state["has_gauss"],
        "gauss": np_state["gauss"],
    })
    python = state["python"]
    gauss_next = python["gauss_next"][0] if python["gauss_next"] else None
    random.setstate((python["version"], tuple(python["internal"]), gauss_next))
    for name, gen in generators.items():
        gen.set_state(state["generators"][name].cpu())
