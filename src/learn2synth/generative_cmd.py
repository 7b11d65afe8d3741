"""``learn2synth labelgen train|sample`` and ``learn2synth spade train|sample``: the learned generators.

Training is resumable like ``learn2synth train``: a run folder holds ``step_*.pt`` checkpoints (config, the
generator's networks and optimizers, every RNG state), ``metrics.csv`` and ``gallery.png``; ``--resume``
continues exactly (a run cut and resumed equals an uninterrupted one bit for bit on CPU). Sampling writes its
outputs all or nothing (:func:`learn2synth.synth_cmd.prepare_output_dir`). Heavy imports stay inside functions.
"""

from __future__ import annotations

from pathlib import Path

from .cli_args import add_common, add_run_arguments
from .errors import ConfigError, InputError

# a run that trains in about a minute on one CPU thread (tests, CI, trying the commands)
QUICK = {"labelgen": ["shape=[32,32]", "ae_steps=60", "diffusion_steps=60", "ae_channels=[8,16]",
                      "unet_channels=[16,32]", "sample_steps=10", "checkpoint_every=60", "log_every=10"],
         "spade": ["shape=[32,32]", "steps=60", "channels=[8,16]", "z_dim=8", "spade_channels=8",
                   "critic_channels=8", "batch_size=4", "checkpoint_every=60", "log_every=10"]}


def add_generator_parsers(sub) -> None:
    """The ``labelgen`` and ``spade`` commands, each with ``train`` and ``sample``."""
    for kind, what in (("labelgen", "label-map generator (KL autoencoder + latent diffusion)"),
                       ("spade", "image generator (SPADE VAE-GAN with a style encoder)")):
        p = sub.add_parser(kind, help=f"train or sample the {what}", description=f"The {what}.")
        actions = p.add_subparsers(dest="action", required=True)
        t = actions.add_parser("train", help="train into a run folder (resumable)")
        add_run_arguments(t, "YAML of settings (see the config's fields in --help of the module)", "shape=[64,64]")
        t.add_argument("--quick", action="store_true", help="a tiny run of about a minute (32 px, few steps)")
        add_common(t)
        t.set_defaults(func=run_train, kind=kind)
        s = actions.add_parser("sample", help="sample from a trained run")
        s.add_argument("--model", required=True, help="run folder or checkpoint of the train command")
        s.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
        s.add_argument("--n", type=int, default=8, help="number of samples (default 8)")
        s.add_argument("--seed", type=int, default=0)
        if kind == "labelgen":
            s.add_argument("--steps", type=int, help="DDIM steps (default: the run's sample_steps)")
        else:
            s.add_argument("--labels", required=True, help="label maps (classes 0..n_classes-1): file, folder, glob")
            s.add_argument("--style", help="style image (NIfTI/MGZ/PNG/TIFF; a 3D volume gives its middle slice "
                                           "for a 2D model); default: style codes drawn from N(0, 1)")
        add_common(s)
        s.set_defaults(func=run_sample, kind=kind)


def load_generator_config(kind: str, path=None, sets=(), quick: bool = False):
    from .config import load_config
    from .generative.labelgen import LabelGenConfig
    from .generative.spade import SpadeConfig

    cls = LabelGenConfig if kind == "labelgen" else SpadeConfig
    return load_config(cls, path, [*(QUICK[kind] if quick else []), *sets])


def build_training(kind: str, config, device="cpu"):
    """The :class:`~learn2synth.generative.labelgen.LabelGenTraining` or
    :class:`~learn2synth.generative.spade.SpadeTraining` of ``config``, with its data read and checked."""
    from .data import load_label_pool, load_real_pool
    from .io import load_label_mapping

    mapping = load_label_mapping(config.label_mapping) if config.label_mapping else None
    if kind == "labelgen":
        from .generative.data import LabelSource
        from .generative.labelgen import LabelGenTraining

        pool = None
        if config.labels != "phantom":
            pool = load_label_pool(config.labels, config.spatial_dims, config.slice_axis, progress=True)
            if not pool.maps:
                raise InputError(config.labels, "holds no label map")
        try:  # checks the classes of every map (after the mapping) before training
            source = LabelSource(pool, config.shape, config.n_classes, mapping, config.fit)
        except ValueError as e:
            raise InputError(config.labels, str(e)) from None
        return LabelGenTraining(config, source, device)
    from .generative.data import PairSource
    from .generative.spade import SpadeTraining

    pool = None
    if config.data != "phantom":
        pool = load_real_pool(config.data, config.spatial_dims, config.slice_axis, config.normalize, mapping,
                              n_classes=config.n_classes)
    return SpadeTraining(config, PairSource(pool, config.shape, config.n_classes, config.fit), device)


def train_generator(training, out, resume: bool = False, progress: bool = True, stop_at: int | None = None,
                    gallery: bool = True) -> dict:
    """Run ``training`` to its last step in ``out`` (resuming from the newest checkpoint if ``resume``);
    checkpoints every ``checkpoint_every`` steps and at the end, writes ``gallery.png`` (unless not ``gallery``);
    returns the last logged values and the CPU seconds of training (over every resumed part)."""
    import time

    from tqdm import tqdm

    from .checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
    from .config import to_dict
    from .rng import capture_rng_state, restore_rng_state, seed_everything
    from .train import CsvLog

    config, out = training.config, Path(out)
    steps = config.steps
    start, latest = 0, {}
    found = latest_checkpoint(out) if resume else None
    if found is not None:
        ckpt = load_checkpoint(found)
        if ckpt["extra"].get("kind") != training.kind:
            raise InputError(found, f"is not a {training.kind} run (kind {ckpt['extra'].get('kind')!r})")
        if ckpt["config"] != to_dict(config):
            raise InputError(found, "was trained with other settings than --config/--set give now")
        training.load_state_dict(ckpt["state"])
        restore_rng_state(ckpt["rng"], {"train": training.generator})
        start, latest = int(ckpt["step"]), dict(ckpt["extra"].get("latest", {}))
    else:
        seed_everything(config.seed)
    out.mkdir(parents=True, exist_ok=True)
    log = CsvLog(out / "metrics.csv", start)
    t0 = time.process_time()
    seconds = float(latest.pop("cpu_seconds", 0.0))
    for step in tqdm(range(start, steps), initial=start, total=steps, desc=training.kind, disable=not progress):
        latest.update(training.step(step))
        done = step + 1
        if done % config.log_every == 0 or done == steps:
            log.log({"step": done, **latest})
        if done % config.checkpoint_every == 0 or done == steps or done == stop_at:
            log.flush()
            extra = {"kind": training.kind, "latest": {**latest, "cpu_seconds": seconds + time.process_time() - t0}}
            save_checkpoint(checkpoint_path(out, done), config=to_dict(config), step=done,
                            state=training.state_dict(), rng=capture_rng_state({"train": training.generator}),
                            extra=extra)
            prune_checkpoints(out, 2)
        if done == stop_at:
            break
    log.flush()
    if gallery and (stop_at is None or stop_at >= steps):
        training.gallery(out / "gallery.png")
    return {**latest, "cpu_seconds": seconds + time.process_time() - t0}


def run_train(args) -> int:
    import torch

    from .train import check_run_folder

    config = load_generator_config(args.kind, args.config, args.set, args.quick)
    torch.set_num_threads(config.threads or torch.get_num_threads())
    out = check_run_folder(args.out, args.resume)
    values = train_generator(build_training(args.kind, config), out, resume=args.resume, progress=not args.quiet)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
    print(f"{args.kind}: {shown}; checkpoints, metrics.csv and gallery.png in {out}")
    return 0


def run_sample(args) -> int:
    import shutil
    import tempfile

    import torch

    from .generative.checkpoints import load_generator
    from .generative.data import read_style_image
    from .synth_cmd import commit_output_dir, prepare_output_dir

    if args.n < 1:
        raise ConfigError("--n", f"must be at least 1, got {args.n}")
    model = load_generator(args.model, args.kind)
    generator = torch.Generator().manual_seed(args.seed)
    if args.kind == "labelgen":
        if args.steps is not None and args.steps < 1:
            raise ConfigError("--steps", f"must be at least 1, got {args.steps}")
        out = prepare_output_dir(args.out)
        rows, write = _sample_labels(model, args, generator)
    else:
        labels = _read_labels(args.labels, model.config)
        style = read_style_image(args.style, model.config) if args.style else None
        out = prepare_output_dir(args.out)
        rows, write = _render(model, labels, style, args, generator)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        write(tmp)
        from .report import save_gallery

        save_gallery(tmp / "gallery.png", rows)
        commit_output_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {args.n} {args.kind} samples and gallery.png to {out}")
    return 0


def _sample_labels(model, args, generator):
    import numpy as np

    from .io import write_image

    maps = model.sample(args.n, generator, steps=args.steps)[:, 0].numpy().astype(np.int32)

    def write(folder):
        for i, m in enumerate(maps):
            write_image(folder / f"label_{i:04d}.nii.gz", m)

    return {"sampled label maps": [m.astype(np.float32) for m in maps[:8]]}, write


def _read_labels(source, config):
    """Label maps of classes 0..n_classes-1 for a SPADE model, fitted to its shape (B, 1, *shape)."""
    import torch

    from .data import load_label_pool
    from .generative.data import fit_label

    pool = load_label_pool(source, config.spatial_dims, config.slice_axis)
    if not pool.maps:
        raise InputError(source, "holds no label map")
    top = max(int(m.max()) for m in pool.maps)
    if top >= config.n_classes:
        raise InputError(source, f"holds class {top}, but the model renders classes 0..{config.n_classes - 1}")
    return torch.stack([fit_label(m.long(), config.shape, config.n_classes) for m in pool.maps])


def _render(model, labels, style, args, generator):
    import numpy as np
    import torch

    from .io import write_image

    picks = [i % len(labels) for i in range(args.n)]
    chosen = labels[picks]
    with torch.no_grad():
        images = model.render(chosen, style, generator)[:, 0].numpy()

    def write(folder):
        for i, (x, y) in enumerate(zip(images, chosen[:, 0].numpy(), strict=True)):
            write_image(folder / f"image_{i:04d}.nii.gz", x.astype(np.float32))
            write_image(folder / f"label_{i:04d}.nii.gz", y.astype(np.int32))

    return {"rendered": list(images[:8]), "label maps": [y.astype(np.float32) for y in chosen[:8, 0].numpy()]}, write
