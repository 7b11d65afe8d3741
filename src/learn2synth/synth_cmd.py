"""``learn2synth synth``: write N synthetic image/label pairs and a gallery, all or nothing.

Everything is read and checked before anything is written; the outputs go to a hidden temporary folder
beside ``--out`` that is renamed into place at the end, so a bad input or a crash leaves no partial output.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import ConfigError, InputError


def prepare_output_dir(out: str) -> Path:
    """Refuse an output folder that exists and is not empty (never overwrite), or whose parent is missing."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "already exists and is not empty; choose another --out (nothing is overwritten)")
    if not out.parent.exists():
        raise InputError(out.parent, "folder does not exist")
    return out


def commit_output_dir(tmp: Path, out: Path) -> None:
    """Move the finished temporary folder onto ``out`` (an empty ``out`` is replaced)."""
    if out.exists():
        out.rmdir()
    tmp.rename(out)


def load_label_maps(source: str):
    """Read and check every label map; returns a list of (Volume, 2D-or-3D int64 array)."""
    from .io import check_label_map, list_files, read_image, squeeze_2d

    maps = []
    for path in list_files(source):
        vol = read_image(path)
        array = vol.array
        if array.ndim == 3 and 1 in array.shape:
            array = squeeze_2d(array)
        if array.ndim not in (2, 3):
            raise InputError(path, f"label map must be 2D or 3D, got shape {vol.array.shape}")
        maps.append((vol, check_label_map(array, path)))
    return maps


def _image_for(ext: str, image: np.ndarray) -> np.ndarray:
    """PNG stores integers: scale [0, 1] to 16 bit. Other formats keep float32."""
    if ext == ".png":
        return np.round(np.clip(image, 0, 1) * 65535).astype(np.uint16)
    return image.astype(np.float32)


def _label_for(ext: str, label: np.ndarray) -> np.ndarray:
    if ext in (".png", ".tif", ".tiff"):
        return label.astype(np.uint8 if label.max() < 256 else np.uint16)
    return label.astype(np.int32)


def _synthesis_settings(args):
    """(SynthConfig, label mapping or None) from --preset/--config/--set. ``--config`` may be a synthesis YAML
    (overriding the preset) or a training config (its ``synth_preset`` and ``synth`` section, and its
    ``data.label_mapping`` for the label maps, e.g. ``configs/brain_synthseg.yaml``); ``--set`` keys are
    synthesis keys either way."""
    from .config import load_config, load_yaml, preset, to_dict
    from .synth import SynthConfig
    from .synth.presets import PRESETS

    raw = load_yaml(args.config) if args.config else {}
    if not ({"synth", "synth_preset", "data", "method"} & set(raw or {})):
        return load_config(SynthConfig, args.config, args.set, base=preset(PRESETS, args.preset)), None
    from .io import load_label_mapping
    from .train_config import load_train_config

    train_config = load_train_config(args.config)
    synth = load_config(SynthConfig, None, args.set, base=to_dict(train_config.synth))
    path = train_config.data.label_mapping
    return synth, (load_label_mapping(path) if path and args.labels else None)


def run_synth(args) -> int:
    import torch
    from tqdm import tqdm

    from .io import supported_extension, write_image
    from .report import save_gallery
    from .synth import Synthesizer, phantom_labels

    if args.n < 1:
        raise ConfigError("--n", f"must be at least 1, got {args.n}")
    if args.batch_size < 1:
        raise ConfigError("--batch-size", f"must be at least 1, got {args.batch_size}")
    config, mapping = _synthesis_settings(args)
    out = prepare_output_dir(args.out)
    device = torch.device(args.device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    if args.phantom:
        ndim = 2 if args.phantom == "2d" else 3
        shape = tuple(args.shape or ((192, 192) if ndim == 2 else (96, 96, 96)))
        if len(shape) != ndim or min(shape) < 8:
            raise ConfigError("--shape", f"needs {ndim} sizes of at least 8, got {list(shape)}")
        sources = [(None, None)]
    else:
        sources = load_label_maps(args.labels)
        if mapping is not None:
            values = sorted({0, *(int(v) for _, a in sources for v in np.unique(a))})
            for key, value in mapping.synthesis_labels(values).items():
                setattr(config.labels, key, value)
    synth = Synthesizer(config, device=device)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        shown = {"image": [], "label": []}
        plan = [(i, i % len(sources)) for i in range(args.n)]
        batches = [plan[k: k + args.batch_size] for k in range(0, len(plan), args.batch_size)]
        with tqdm(total=args.n, desc="synth", unit="img", disable=None) as bar:
            for batch in batches:
                if args.phantom:
                    labels = phantom_labels(len(batch), shape, args.n_labels, generator=generator)
                else:
                    labels = torch.stack([torch.from_numpy(sources[s][1]) for _, s in batch])[:, None].to(device)
                try:
                    image, target, _ = synth(labels, generator)
                except ValueError as e:  # e.g. label values the config does not list
                    raise InputError(args.labels or "phantom", str(e)) from e
                for (i, s), img, tgt in zip(batch, image.cpu().numpy(), target.cpu().numpy(), strict=True):
                    vol = sources[s][0]
                    ext = ".nii.gz" if vol is None else supported_extension(vol.path)
                    like_shape = vol.array.shape if vol is not None else img[0].shape
                    like = vol if vol is not None and ext in (".nii", ".nii.gz", ".mgz", ".mgh") else None
                    write_image(tmp / f"image_{i:04d}{ext}", _image_for(ext, img[0]).reshape(like_shape), like=like)
                    write_image(tmp / f"label_{i:04d}{ext}", _label_for(ext, tgt[0]).reshape(like_shape), like=like)
                    if len(shown["image"]) < 8:
                        shown["image"].append(img[0])
                        shown["label"].append(tgt[0])
                bar.update(len(batch))
        save_gallery(tmp / "gallery.png", {f"synthetic ({args.preset})": shown["image"]}, labels=shown["label"])
        commit_output_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {args.n} image/label pairs and gallery.png to {out}")
    return 0
