"""``learn2synth gan train | sample``: the label-to-image GAN of ``method: gan_synth`` on its own.

``gan train`` is ``learn2synth train`` with ``method: gan_synth`` stopped after its GAN phase
(``steps = gan.pretrain_steps``): an ordinary run folder (``--resume`` continues it, and ``learn2synth train
--resume`` with more steps goes on into the segmenter phase). ``gan sample`` renders label maps with a run's
generator and writes image/label pairs (NIfTI, ``image_0000.nii.gz``/``label_0000.nii.gz``) and ``gallery.png``
(one column per sample, up to 8; rows: the generated image with the label contours, the real image when the labels
come from a folder of real pairs, the label map in colour), all or nothing. Label map files are cropped to their
labelled bounding box (as training's label pools are) and must hold the run's classes (after its
``data.real_label_mapping``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import ConfigError, InputError


def run_gan_train(args) -> int:
    from .train import check_run_folder, train
    from .train_config import load_train_config

    config = load_train_config(args.config, ["method=gan_synth", *args.set])
    if config.gan.pretrain_steps < 1:
        raise ConfigError("gan.pretrain_steps", "must be at least 1 to train the GAN alone")
    config.steps = config.gan.pretrain_steps
    out = check_run_folder(args.out, args.resume)
    metrics = train(config, out, resume=args.resume, progress=not args.quiet)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith("gan_"))
    print(f"gan: {config.steps} steps; held-out {shown or '(no held-out pairs)'}; checkpoints in {out}")
    return 0


def load_gan(model: str):
    """(Pix2Pix with a run's weights, its TrainConfig) from a checkpoint file or run folder of gan_synth."""
    from .checkpoint import load_checkpoint, resolve_checkpoint
    from .config import from_dict
    from .generative.pix2pix import Pix2Pix
    from .train_config import TrainConfig

    path = resolve_checkpoint(model)
    ckpt = load_checkpoint(path)
    if "gan_gan" not in ckpt["state"]:
        raise InputError(path, "holds no GAN: it was not made by 'learn2synth gan train' or method gan_synth")
    try:
        config = from_dict(TrainConfig, ckpt["config"])
    except (ConfigError, TypeError) as e:
        raise InputError(path, f"its config does not fit this learn2synth: {e}") from e
    gan = Pix2Pix.from_config(config)
    gan.load_state_dict(ckpt["state"]["gan_gan"])
    return gan, config


def read_label_examples(source: str, config) -> tuple[list, list]:
    """(label maps, real images or Nones) the generator can take: a folder with images/ and labels/ (real pairs,
    read like training's real data) or label map files, each checked against the model's classes."""
    import torch

    from .data import load_label_pool, load_real_pool
    from .io import check_classes, list_files
    from .sources import real_mapping

    d = config.data
    if (Path(source) / "images").is_dir() and (Path(source) / "labels").is_dir():
        pool = load_real_pool(source, d.spatial_dims, d.slice_axis, config.synth.normalize, real_mapping(config),
                              n_classes=d.n_classes, colour=d.colour, orientation=d.orientation,
                              voxel_size=d.voxel_size)
        return pool.labels, pool.images
    mapping, labels = real_mapping(config), []
    for path in list_files(source):
        for m in load_label_pool(str(path), d.spatial_dims, d.slice_axis).maps:
            m = mapping(m, path=path) if mapping is not None else m.long()
            check_classes(m, d.n_classes, path)
            labels.append(torch.as_tensor(m).long())
    return labels, [None] * len(labels)


def run_gan_sample(args) -> int:
    import torch

    from .io import write_image
    from .report import save_gallery
    from .synth_cmd import commit_output_dir, prepare_output_dir

    if args.n < 1:
        raise ConfigError("--n", f"must be at least 1, got {args.n}")
    gan, config = load_gan(args.model)
    labels, reals = read_label_examples(args.labels, config)
    if not labels:
        raise InputError(args.labels, "holds no label map with a labelled voxel")
    out = prepare_output_dir(args.out)
    picks = np.linspace(0, len(labels) - 1, args.n).round().astype(int).tolist()  # spread over the inputs
    generator = torch.Generator().manual_seed(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        shown = {"label": [], "generated": [], "real": []}
        with torch.no_grad():
            for k, i in enumerate(picks):
                image = gan.generate(labels[i][None], generator)[0, 0].numpy()
                label = labels[i][0].numpy()
                write_image(tmp / f"image_{k:04d}.nii.gz", image.astype(np.float32))
                write_image(tmp / f"label_{k:04d}.nii.gz", label.astype(np.int32))
                if k < 8:
                    shown["label"].append(label)
                    shown["generated"].append(image)
                    if reals[i] is not None:
                        shown["real"].append(reals[i][0].numpy())
        rows = {"generated": shown["generated"], **({"real": shown["real"]} if shown["real"] else {})}
        save_gallery(tmp / "gallery.png", rows, labels=shown["label"], predictions={"label map": shown["label"]})
        commit_output_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {args.n} generated image/label pairs and gallery.png to {out}")
    return 0
