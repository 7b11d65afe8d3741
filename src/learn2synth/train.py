"""The training loop: batch -> method step -> log -> validate -> checkpoint.

``setup(config)`` reads the data (:mod:`learn2synth.sources`) and builds the method the config names (from the
registry :data:`learn2synth.methods.METHODS`; the method builds its own networks and optimizers);
``train(config, out)`` runs the loop, resumable from the newest checkpoint of ``out`` and then bit-for-bit equal
to an uninterrupted run on CPU (the method saves every state it holds; every RNG state is saved beside it).
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import torch

from .checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from .config import to_dict
from .data import RealPool
from .distributed import DistInfo, any_rank, barrier, gather_objects, init_from_env, mean_reducer
from .errors import InputError, Learn2SynthError
from .init_from import copy_params, load_init_params
from .methods import method_class
from .methods.base import Method
from .rng import capture_rng_state, derive_seed, restore_rng_state, seed_everything
from .sources import label_values, load_data
from .train_config import TrainConfig


class TrainingError(Learn2SynthError):
    """Training cannot go on (e.g. the loss stays non-finite); the newest checkpoint is intact."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup(config: TrainConfig, info: DistInfo | None = None, init: bool = True,
          progress: bool = True) -> tuple[Method, RealPool | None]:
    """Everything a run needs, freshly initialized from the config's seed; returns (method, validation pool).

    With ``config.init_from`` (and ``init``; a resumed run passes False) the segmenter starts from that
    checkpoint's weights, checked against the network the config describes before any data is read.
    Under torch.distributed (``info``), each rank draws from its own shard of the label maps and real examples
    with its own random stream, and gradients are averaged over ranks.
    """
    start = load_init_params(config.init_from, config) if init and config.init_from else None
    info = info or DistInfo()
    device = pick_device(config.device)
    if device.type == "cuda" and info.active:
        device = torch.device("cuda", info.local_rank)
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    data = load_data(config, info, device, progress)
    stream = derive_seed(config.seed, "train", info.rank) if info.active else derive_seed(config.seed, "train")
    generator = torch.Generator(device=device).manual_seed(stream)
    method = method_class(config.method)(config, data, generator, device, reduce=mean_reducer(info))
    if start is not None:
        copy_params(*start, method.params)
    return method, data.val


def save(method: Method, out: Path, step: int, extra: dict | None = None,
         info: DistInfo | None = None) -> Path | None:
    """Checkpoint on the main rank, with every rank's RNG state (all ranks must call it)."""
    info = info or DistInfo()
    rngs = gather_objects(capture_rng_state({"train": method.generator}), info)
    path = None
    if info.is_main:
        extra = {**(extra or {}), "label_values": label_values(method.config),  # what predictions write per class
                 "sliding_window": _trained_on_crops(method)}
        path = save_checkpoint(checkpoint_path(out, step), config=to_dict(method.config), step=step,
                               state=method.state_dict(), rng={"per_rank": rngs}, extra=extra)
        prune_checkpoints(out, method.config.keep_checkpoints)
    barrier(info)
    return path


def _trained_on_crops(method: Method) -> bool:
    """True if some training example is larger than ``data.shape`` (a 2D model then predicts by sliding window)."""
    shape = method.config.data.shape
    examples = [*method.labels.maps, *(method.real.images if method.real is not None else [])]
    return any(any(n > s for n, s in zip(m.shape[1:], shape, strict=True)) for m in examples)


def restore(method: Method, path: Path, info: DistInfo | None = None) -> tuple[int, dict]:
    """Load a checkpoint into ``method``; returns the number of steps already done and the checkpoint's ``extra``."""
    info = info or DistInfo()
    ckpt = load_checkpoint(path, map_location=method.device)
    ranks = ckpt["rng"].get("per_rank", [])
    if len(ranks) != info.world_size:
        raise InputError(path, f"was written by {len(ranks)} process(es); resume it with the same number, "
                               f"not {info.world_size}")
    state = ckpt["state"]
    if set(state["params"]) != set(method.params):
        raise InputError(path, "checkpoint was made for a different network; it does not match this config")
    method.load_state_dict(state)
    restore_rng_state(ranks[info.rank], {"train": method.generator})
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
    # a resumed run continues from its own weights
    method, val = setup(config, info, init=resume_from is None, progress=progress)
    if info.is_main:
        _check_writable(out, method)
    barrier(info)
    # `latest` holds each logged value's newest entry, so a row logged after a plain step of a learn2synth run with
    # meta_every > 1 still shows the last real loss; it and the skip count are checkpointed for an exact resume
    start, metrics, latest, skipped_total = 0, {}, {}, 0
    if resume_from is not None:
        start, extra = restore(method, resume_from, info)
        latest, skipped_total = dict(extra.get("latest", {})), int(extra.get("skipped_total", 0))
        if start >= config.steps:  # nothing left to do: report the finished run's final validation
            metrics = dict(extra.get("metrics", {}))
    # only the main rank logs, validates and writes; the others compute their shards and join the averages
    val = val if info.is_main else None
    log = CsvLog(out / "metrics.csv", start) if info.is_main else _NoLog()
    writer = _tensorboard(out) if tensorboard and info.is_main else None
    t0 = saved_at = time.perf_counter()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc=config.method,
               disable=not (progress and info.is_main))
    for step in bar:
        method.opt.lr = config.optim.lr_at(step)
        values = method.step(step)
        if method.skipped:
            skipped_total += 1
            values["skipped"] = float(skipped_total)
        latest.update(values)
        if method.skipped >= config.max_skipped:
            log.log({"step": step + 1, **latest})
            log.flush()
            raise TrainingError(f"{method.skipped} consecutive updates had a non-finite loss or gradient (step "
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
        extra = {"metrics": metrics, "latest": latest, "skipped_total": skipped_total}
        if due or any_rank(late, info):
            log.flush()
            save(method, out, step + 1, extra=extra, info=info)
            saved_at = time.perf_counter()
        if val is not None and ((step + 1) % config.val_every == 0 or last):
            metrics = method.evaluate(val)
            log.log({"step": step + 1, **{f"val_{k}": v for k, v in metrics.items()}})
            log.flush()
            if writer is not None:
                writer.add_scalar("val/dice_mean", metrics["dice_mean"], step + 1)
            if last:  # the final checkpoint carries the final validation, for a resumed finished run to report
                save(method, out, step + 1, extra={**extra, "metrics": metrics}, info=info)
        if step + 1 == stop_at:
            break
    log.flush()
    if writer is not None:
        writer.close()
    if info.is_main and start < config.steps and (stop_at is None or stop_at >= config.steps):
        if progress:  # a plot of learned priors synthesizes and reads images: tens of seconds on a brain
            print(f"{config.method}: writing the run's reports into {out}", file=sys.stderr, flush=True)
        method.finish(out)  # reports of what the method learned
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


def _check_writable(out: Path, method: Method) -> None:
    """Fail before training, not at the first checkpoint, when ``out`` cannot hold the method."""
    import shutil

    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise InputError(out, f"cannot write there ({e.strerror or e})") from None
    size = sum(p.numel() * p.element_size() for p in method.params.values())
    needed = 4 * size * (method.config.keep_checkpoints + 1) + (16 << 20)  # params + optimizer state per checkpoint
    free = shutil.disk_usage(out).free
    if free < needed:
        raise InputError(out, f"only {free >> 20} MiB free, the run needs about {needed >> 20} MiB for checkpoints")


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional at run time
        return None
    return SummaryWriter(str(out / "tensorboard"))
