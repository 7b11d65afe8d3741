"""The training loop: batch -> method step -> log -> validate -> checkpoint.

``setup(config)`` builds everything a run needs (data, segmenter, optimizer, augmenter) as a
:class:`~learn2synth.methods.Run`; ``train(config, out)`` runs the loop, resumable from the newest checkpoint
of ``out`` and then bit-for-bit equal to an uninterrupted run on CPU (every RNG and optimizer state is saved).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import torch

from .checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from .config import to_dict
from .data import LabelPool, RealPool, load_label_pool, load_real_pool
from .distributed import DistInfo, any_rank, barrier, gather_objects, init_from_env, mean_reducer
from .errors import ConfigError, InputError, Learn2SynthError
from .init_from import copy_params, load_init_params
from .losses import get_loss
from .meta.optim import get_optimizer
from .methods import METHODS, Run
from .methods.guard import AugmenterGuard
from .nets import build_segmenter
from .rng import capture_rng_state, derive_seed, restore_rng_state, seed_everything
from .synth import Synthesizer, phantom_labels
from .train_config import TrainConfig


class TrainingError(Learn2SynthError):
    """Training cannot go on (e.g. the loss stays non-finite); the newest checkpoint is intact."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_net(config: TrainConfig):
    """The segmenter a config describes (training and inference build it the same way)."""
    d, n = config.data, config.net
    return build_segmenter(d.spatial_dims, 1, d.n_classes, channels=tuple(n.channels),
                           strides=None if n.strides is None else tuple(n.strides), num_res_units=n.num_res_units,
                           norm=n.norm, dropout=n.dropout, act=n.act)


def build_augmenter(config: TrainConfig, synth: Synthesizer | None = None, labels: LabelPool | None = None):
    """The augmenter of ``config.augmenter``; the learned-priors one needs the synthesizer and the label pool
    (its intensity class count)."""
    from .augment.learned_priors import LearnedPriorsAugmenter
    from .augment.parametric import ParametricAugmenter
    from .augment.residual import ResidualAugmenter

    a = config.augmenter
    if a.kind == "residual":
        if a.max_values:
            raise ConfigError("augmenter.max_values", "the residual augmenter has no named values to bound")
        return ResidualAugmenter(config.data.spatial_dims, channels=tuple(a.channels))
    if a.kind == "learned_priors":
        augmenter = LearnedPriorsAugmenter(synth, intensity_classes(config, synth, labels), a.priors)
        augmenter.check_bounds(a.max_values)
        return augmenter
    noise = None if a.noise == "none" else a.noise
    noise_init = a.noise_init[0] if noise == "sigma" else tuple(a.noise_init)
    bias_init = a.bias_init[0] if len(a.bias_init) == 1 else tuple(a.bias_init)
    augmenter = ParametricAugmenter(noise=noise, noise_init=noise_init, bias_points=tuple(a.bias_points),
                                    bias_init=bias_init, gamma_init=a.gamma_init, blur_init=a.blur_init)
    augmenter.check_bounds(a.max_values)
    return augmenter


def intensity_classes(config: TrainConfig, synth: Synthesizer, labels: LabelPool) -> int:
    """K, the number of intensity classes the synthesis draws: from its label tables, else one per label value
    (phantoms: ``data.n_classes``)."""
    if synth.n_classes is not None:
        return synth.n_classes
    if config.data.labels == "phantom":
        return config.data.n_classes
    return max(labels.values()) + 1


def phantom_data(config: TrainConfig, synth: Synthesizer) -> tuple[LabelPool, RealPool, RealPool]:
    """Label maps, and 'real' train/test images made from held-out phantoms with the hidden corruption."""
    from .augment.parametric import ParametricAugmenter

    d, pr = config.data, config.data.phantom_real
    g = torch.Generator().manual_seed(derive_seed(config.seed, "phantoms"))
    maps = phantom_labels(d.phantom_count, d.shape, d.n_classes, generator=g)
    held_out = phantom_labels(pr.train_count + pr.test_count, d.shape, d.n_classes, generator=g)
    noise = "range" if pr.sigma_range else "sigma" if pr.sigma > 0 else None
    hidden = ParametricAugmenter(noise=noise, noise_init=pr.sigma_range or max(pr.sigma, 1e-6),
                                 bias_points=(2, 4, 8)[: len(pr.bias)], bias_init=tuple(pr.bias) or 0.0)
    with torch.no_grad():
        clean = synth(held_out, g).image if pr.contrast is None else torch.tensor(pr.contrast)[held_out.long()]
        images = hidden(clean, g)
    pool = RealPool(list(images), list(held_out), [f"phantom{i}" for i in range(len(images))])
    n = pr.train_count
    return LabelPool(list(maps)), pool.subset(range(n)), pool.subset(range(n, n + pr.test_count))


def setup(config: TrainConfig, info: DistInfo | None = None, init: bool = True) -> tuple[Run, RealPool | None]:
    """Everything a run needs, freshly initialized from the config's seed; returns (run, validation pool).

    With ``config.init_from`` (and ``init``; a resumed run passes False) the segmenter starts from that
    checkpoint's weights, checked against the network the config describes before any data is read.
    Under torch.distributed (``info``), each rank draws from its own shard of the label maps and real examples
    with its own random stream, and gradients are averaged over ranks.
    """
    d = config.data
    start = load_init_params(config.init_from, config) if init and config.init_from else None
    info = info or DistInfo()
    device = pick_device(config.device)
    if device.type == "cuda" and info.active:
        device = torch.device("cuda", info.local_rank)
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    synth = Synthesizer(config.synth, device=device)
    if d.labels == "phantom" or d.real == "phantom":
        labels, real, val = phantom_data(config, synth)
    if d.labels is None:
        labels = LabelPool([])
    elif d.labels != "phantom":
        labels = load_label_pool(d.labels, d.spatial_dims, d.slice_axis, progress=info.is_main)
        if d.label_mapping and config.synth.labels.generation_labels is None:
            from .io import load_label_mapping

            synth = Synthesizer(_with_mapping(config, labels, load_label_mapping(d.label_mapping)), device=device)
    if d.real not in (None, "phantom"):
        pool = load_real_pool(d.real, d.spatial_dims, d.slice_axis, config.synth.normalize, real_mapping(config),
                              n_classes=d.n_classes, colour=d.colour)
        real, val = pool.split_by_subject(d.val_fraction, config.seed)
    elif d.real is None:
        real, val = None, None
    if info.active:
        labels = LabelPool(_shard(labels.maps, info))
        if real is not None and len(real) >= info.world_size:
            real = real.subset(_shard(list(range(len(real))), info))

    torch.manual_seed(derive_seed(config.seed, "init"))
    net = build_net(config).to(device)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in net.named_parameters()}
    if start is not None:
        copy_params(*start, params)
    opt = get_optimizer(config.optim.name, **config.optim.options())
    augmenter = aug_opt = guard = None
    if config.method == "learn2synth":
        a = config.augmenter
        augmenter = build_augmenter(config, synth, labels).to(device)
        aug_opt = torch.optim.Adam(augmenter.parameters(), lr=a.lr, betas=tuple(a.betas))
        if a.check_every:
            if val is None:
                raise ConfigError("augmenter.check_every", "needs held-out real examples (data.val_fraction > 0 and "
                                                           "at least 2 real subjects), or set it to 0")
            guard = AugmenterGuard(val, a.check_every, a.check_tolerance)
    stream = derive_seed(config.seed, "train", info.rank) if info.active else derive_seed(config.seed, "train")
    generator = torch.Generator(device=device).manual_seed(stream)
    run = Run(config, net, params, opt, opt.init(params), get_loss(config.loss), synth, labels, real, generator,
              device, augmenter, aug_opt, reduce=mean_reducer(info), guard=guard)
    return run, val


def _shard(items: list, info: DistInfo) -> list:
    return items[info.rank :: info.world_size] if len(items) >= info.world_size else items


def real_mapping(config: TrainConfig):
    """The mapping of the real labels' values to classes (``data.real_label_mapping``), or None."""
    from .io import load_label_mapping

    path = config.data.real_label_mapping
    return load_label_mapping(path) if path else None


def label_values(config: TrainConfig) -> list[int]:
    """The label value a prediction writes for each class: the real labels' values (through
    ``data.real_label_mapping``, first value listed per class) or the class indices themselves."""
    mapping = real_mapping(config)
    classes = list(range(config.data.n_classes))
    if mapping is None:
        return classes
    back = mapping.inverse()
    missing = [c for c in classes if c not in back.mapping]
    if missing:
        raise InputError(config.data.real_label_mapping, f"maps no label value to classes {missing}")
    return [int(v) for v in back(torch.tensor(classes))]


def _with_mapping(config: TrainConfig, labels: LabelPool, mapping):
    """Synthesis config whose targets follow ``mapping`` and whose intensity classes follow its groups (each
    label value not in a group draws its own intensity)."""
    import copy

    synth_cfg = copy.deepcopy(config.synth)
    for key, value in mapping.synthesis_labels(labels.values()).items():
        setattr(synth_cfg.labels, key, value)
    too_big = sorted({t for t in synth_cfg.labels.segmentation_labels if t >= config.data.n_classes})
    if too_big:
        raise ConfigError("data.label_mapping", f"maps label values to classes {too_big}, but data.n_classes is "
                                                f"{config.data.n_classes}")
    return synth_cfg


def evaluate(run: Run, pool: RealPool, batch_size: int = 16) -> dict[str, float]:
    """Dice per class (and its mean) of the current segmenter on whole examples of ``pool`` (:meth:`Run.evaluate`)."""
    return run.evaluate(pool)


def _state(run: Run) -> dict:
    state = {"params": {k: v.detach() for k, v in run.params.items()}, "opt": run.opt.state_dict(run.opt_state)}
    if run.augmenter is not None:
        state["augmenter"] = run.augmenter.state_dict()
        state["aug_opt"] = run.aug_opt.state_dict()
    if run.guard is not None:
        state["guard"] = run.guard.state_dict()
    return state


def save(run: Run, out: Path, step: int, extra: dict | None = None, info: DistInfo | None = None) -> Path | None:
    """Checkpoint on the main rank, with every rank's RNG state (all ranks must call it)."""
    info = info or DistInfo()
    rngs = gather_objects(capture_rng_state({"train": run.generator}), info)
    path = None
    if info.is_main:
        extra = {**(extra or {}), "label_values": label_values(run.config),  # what predictions write per class
                 "sliding_window": _trained_on_crops(run)}
        path = save_checkpoint(checkpoint_path(out, step), config=to_dict(run.config), step=step, state=_state(run),
                               rng={"per_rank": rngs}, extra=extra)
        prune_checkpoints(out, run.config.keep_checkpoints)
    barrier(info)
    return path


def _trained_on_crops(run: Run) -> bool:
    """True if some training example is larger than ``data.shape`` (a 2D model then predicts by sliding window)."""
    shape = run.config.data.shape
    examples = [*run.labels.maps, *(run.real.images if run.real is not None else [])]
    return any(any(n > s for n, s in zip(m.shape[1:], shape, strict=True)) for m in examples)


def restore(run: Run, path: Path, info: DistInfo | None = None) -> tuple[int, dict]:
    """Load a checkpoint into ``run``; returns the number of steps already done and the checkpoint's ``extra``."""
    info = info or DistInfo()
    ckpt = load_checkpoint(path, map_location=run.device)
    ranks = ckpt["rng"].get("per_rank", [])
    if len(ranks) != info.world_size:
        raise InputError(path, f"was written by {len(ranks)} process(es); resume it with the same number, "
                               f"not {info.world_size}")
    state = ckpt["state"]
    if set(state["params"]) != set(run.params):
        raise InputError(path, "checkpoint was made for a different network; it does not match this config")
    run.params = {k: v.to(run.device).requires_grad_(True) for k, v in state["params"].items()}
    run.opt_state = run.opt.load_state_dict(state["opt"], run.params)
    if run.augmenter is not None:
        run.augmenter.load_state_dict(state["augmenter"])
        run.aug_opt.load_state_dict(state["aug_opt"])
    if run.guard is not None and "guard" in state:
        run.guard.load_state_dict(state["guard"])
    restore_rng_state(ranks[info.rank], {"train": run.generator})
    return int(ckpt["step"]), ckpt["extra"]


class CsvLog:
    """CSV of logged values, rewritten at each checkpoint; on resume, rows logged after the checkpoint are
    dropped, so the log of a resumed run equals that of an uninterrupted one."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        self.rows = []
        if resume_step and path.exists():
            with open(path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        self.writer = None

    def log(self, row: dict) -> None:
        self.rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    def flush(self) -> None:
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        tmp.replace(self.path)


def train(config: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
          tensorboard: bool = True, stop_at: int | None = None) -> dict:
    """Train one method from its config into ``out``; returns the final validation metrics (if any).

    ``stop_at`` ends this call after that many steps (with a checkpoint) as if interrupted; ``resume`` then
    continues from the newest checkpoint in ``out``.
    """
    from tqdm import tqdm

    out = Path(out)
    info = init_from_env(pick_device(config.device))
    resume_from = latest_checkpoint(out) if resume else None
    run, val = setup(config, info, init=resume_from is None)  # a resumed run continues from its own weights
    if info.is_main:
        _check_writable(out, run)
    barrier(info)
    # `latest` holds each logged value's newest entry, so a row logged after a plain step of a learn2synth run with
    # meta_every > 1 still shows the last real loss; it and the skip count are checkpointed for an exact resume
    start, metrics, latest, skipped_total = 0, {}, {}, 0
    if resume_from is not None:
        start, extra = restore(run, resume_from, info)
        latest, skipped_total = dict(extra.get("latest", {})), int(extra.get("skipped_total", 0))
        if start >= config.steps:  # nothing left to do: report the finished run's final validation
            metrics = dict(extra.get("metrics", {}))
    # only the main rank logs, validates and writes; the others compute their shards and join the averages
    val = val if info.is_main else None
    log = CsvLog(out / "metrics.csv", start) if info.is_main else _NoLog()
    writer = _tensorboard(out) if tensorboard and info.is_main else None
    step_fn = METHODS[config.method]
    t0 = saved_at = time.perf_counter()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc=config.method,
               disable=not (progress and info.is_main))
    for step in bar:
        values = step_fn(run, step)
        if run.skipped:
            skipped_total += 1
            values["skipped"] = float(skipped_total)
        latest.update(values)
        if run.skipped >= config.max_skipped:
            log.log({"step": step + 1, **latest})
            log.flush()
            raise TrainingError(f"{run.skipped} consecutive updates had a non-finite loss or gradient (step "
                                f"{step + 1}); last checkpoint kept in {out}. Lower the learning rate or check "
                                "the data for NaN/inf.")
        last = step + 1 == config.steps
        if (step + 1) % config.log_every == 0 or last:
            log.log({"step": step + 1, **latest})
            log.flush()  # metrics.csv is current at every log step, not only at checkpoints
            bar.set_postfix({k: f"{v:.3g}" for k, v in list(values.items())[:3]})
            for k, v in latest.items():
                if writer is not None:
                    writer.add_scalar(k, v, step + 1)
        # the checkpoint comes before validation, so an error while validating cannot lose the trained weights
        due = (step + 1) % config.checkpoint_every == 0 or last or step + 1 == stop_at
        late = (step + 1) % config.log_every == 0 and time.perf_counter() - saved_at > 60 * config.checkpoint_minutes
        if due or any_rank(late, info):
            log.flush()
            save(run, out, step + 1, extra={"metrics": metrics, "latest": latest, "skipped_total": skipped_total},
                 info=info)
            saved_at = time.perf_counter()
        if val is not None and ((step + 1) % config.val_every == 0 or last):
            metrics = evaluate(run, val)
            log.log({"step": step + 1, **{f"val_{k}": v for k, v in metrics.items()}})
            log.flush()
            if writer is not None:
                writer.add_scalar("val/dice_mean", metrics["dice_mean"], step + 1)
            if last:  # the final checkpoint carries the final validation, for a resumed finished run to report
                save(run, out, step + 1, extra={"metrics": metrics, "latest": latest, "skipped_total": skipped_total},
                     info=info)
        if step + 1 == stop_at:
            break
    log.flush()
    if writer is not None:
        writer.close()
    if info.is_main and config.method == "learn2synth" and config.augmenter.kind == "learned_priors" \
            and start < config.steps and (stop_at is None or stop_at >= config.steps):
        from .report_priors import write_priors_report

        write_priors_report(run, out)  # learned_priors.md and .png
    metrics["seconds"] = time.perf_counter() - t0
    return metrics


class _NoLog:
    def log(self, row: dict) -> None:
        pass

    def flush(self) -> None:
        pass


def check_run_folder(out: str | Path, resume: bool) -> Path:
    """``out`` as a run folder to train into: not a file, and not a finished or started run unless ``resume``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if not resume and out.is_dir() and latest_checkpoint(out) is not None:
        raise InputError(out, "already holds a run; pass --resume to continue it or choose another --out")
    return out


def _check_writable(out: Path, run: Run) -> None:
    """Fail before training, not at the first checkpoint, when ``out`` cannot hold the run."""
    import shutil

    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise InputError(out, f"cannot write there ({e.strerror or e})") from None
    size = sum(p.numel() * p.element_size() for p in run.params.values())
    needed = 4 * size * (run.config.keep_checkpoints + 1) + (16 << 20)  # params + optimizer state per checkpoint
    free = shutil.disk_usage(out).free
    if free < needed:
        raise InputError(out, f"only {free >> 20} MiB free, the run needs about {needed >> 20} MiB for checkpoints")


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional at run time
        return None
    return SummaryWriter(str(out / "tensorboard"))
