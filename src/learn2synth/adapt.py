"""``learn2synth adapt``: continue training a segmenter with Learn2Synth on a few real labeled examples.

The run starts from the model's weights (``init_from``) and from its training's synthesis and data settings: the
checkpoint's stored config gives the base (synth section, net, and ``data.labels / label_mapping /
real_label_mapping / shape / n_classes / spatial_dims / slice_axis / orientation / voxel_size / class_names /
colour``), then the adapt defaults (:data:`ADAPT_DEFAULTS`: method learn2synth, 500 steps, debiased
hypergradient, learned synthesis priors, a validation check on the augmenter), ``data.real`` = ``--real``, and
last ``--config`` and ``--set``. The run folder is an ordinary training run (``predict``, ``segment``,
``--resume``).
"""

from __future__ import annotations

import glob
import time
from pathlib import Path

from .checkpoint import load_checkpoint, resolve_checkpoint
from .config import merge
from .errors import ConfigError, InputError
from .init_from import network_differences
from .train_config import TrainConfig, load_train_config

ADAPT_DEFAULTS = {
    "method": "learn2synth",
    "steps": 500,
    "meta": {"debias": True},
    # a trained model is refined, not retrained: a tenth of training's Adam step (a fresh Adam state's first steps
    # are full-size). Not tuned yet: in a 4-step smoke run at 2e-3, synthseg-continued fell from 0.40 to 0.12 Dice
    "optim": {"lr": 2e-4},
    # the check's tolerance sits above its noise: on FLAIR-like K=5 slices the held-out Dice moved by 0.016-0.020
    # (sd) between checks with the augmenter barely moving, so at the trainer's 0.01 the guard reverted 6 times in
    # 900 steps, its lr halving each time to 1/64, and the priors stayed at their start (adapt_flair.md)
    "augmenter": {"kind": "learned_priors", "check_every": 50, "check_tolerance": 0.03},
    "data": {"val_fraction": 0.25},  # real subjects held out for the augmenter check and validation
}
CARRIED_DATA = ("labels", "label_mapping", "real_label_mapping", "shape", "n_classes", "spatial_dims",
                "slice_axis", "orientation", "voxel_size", "class_names", "colour", "phantom_count", "phantom_real")


def adapt_config(model: str | Path, real: str | Path, config: str | Path | None = None,
                 sets=()) -> TrainConfig:
    """The training config of ``adapt`` (see the module docstring); bad inputs raise a one-line InputError."""
    path = resolve_checkpoint(model)
    stored = load_checkpoint(path, map_location="cpu")["config"]
    data = stored.get("data") or {}
    base = {key: stored[key] for key in ("synth_preset", "synth", "net", "loss") if key in stored}
    base["data"] = {key: data[key] for key in CARRIED_DATA if key in data}
    base = merge(merge(base, ADAPT_DEFAULTS), {"data": {"real": str(real)}, "init_from": str(path)})
    result = load_train_config(config, sets, base=base)
    differences = network_differences(stored, result)
    if differences:
        raise InputError(path, "the model does not fit these settings: " + "; ".join(differences))
    # the user's own input first, then the files the model's training named
    if result.data.real not in (None, "phantom") and not Path(result.data.real).exists():
        raise InputError(result.data.real, "no such file or folder (the real labeled examples to adapt to)")
    _check_model_files(path, result)
    _check_held_out(result)
    return result


def _check_held_out(config: TrainConfig) -> None:
    """The augmenter check needs a real subject to hold out: refuse one subject now, from the file names, rather
    than after the label maps are read (a minute for the shipped model's)."""
    from .data import read_manifest

    if not config.augmenter.check_every or config.data.real in (None, "phantom"):
        return
    subjects = {subject for *_, subject in read_manifest(config.data.real)}
    if len(subjects) < 2:
        raise ConfigError("augmenter.check_every", f"--real {config.data.real} holds one subject; the augmenter "
                                                   "check holds real subjects out, so give two or more, or --set "
                                                   "augmenter.check_every=0")


def _check_model_files(model: Path, config: TrainConfig) -> None:
    """The label maps (and label mappings) named by the model's config must still be found from here."""
    d = config.data
    for key, value in (("labels", d.labels), ("label_mapping", d.label_mapping),
                       ("real_label_mapping", d.real_label_mapping)):
        if value in (None, "phantom") or Path(value).exists() or glob.glob(value):
            continue
        raise InputError(value, f"data.{key} of the model {model} not found (paths are relative to the folder "
                                f"its training ran in); pass --set data.{key}=PATH")


def run_adapt(args) -> int:
    started = time.perf_counter()
    from .cli_args import run_summary, threads_set
    from .segment import shipped_model_path
    from .train import check_run_folder, train

    config = adapt_config(args.model or shipped_model_path(args.view), args.real, args.config, threads_set(args))
    out = check_run_folder(args.out, args.resume)
    metrics = train(config, out, resume=args.resume, progress=not args.quiet)
    print(f"adapt: {run_summary(metrics, started)}; the adapted model is the run folder {out} (use it with "
          "predict/segment --model)")
    return 0
