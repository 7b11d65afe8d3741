"""Cost of a learn2synth meta-step against a plain synthseg training step: time, peak memory, scaling.

Same segmenter, batch and threads for every mode: the trainer's U-Net (``build_segmenter``: residual units,
instance norm, GELU; channels (16, 32, 64, 128) by default), 6 classes, Dice + cross-entropy, 2 torch threads.

Modes, each on the same fixed batch (phantom label maps through the trainer's default synthesis, preset
``none``; "real" images are held-out phantoms with a hidden noise and bias field, as in the demo):

- ``plain_<opt>``: :func:`learn2synth.meta.hypergrad.plain_step` on the synthetic batch (the synthseg update).
- ``exact_<opt>`` / ``fd_<opt>``: :func:`learn2synth.meta.hypergrad.meta_step` in exact or finite-difference
  mode, with the synthetic loss through a ``ParametricAugmenter`` (trainer defaults: noise sigma + three-scale
  bias field) and a real batch of the same size, as ``learn2synth.methods.learn2synth.step`` calls it.

``<opt>`` is ``sgd`` (momentum 0.9) or ``adam`` (the trainer's default); optimizer states are those after one
step (non-zero moments). Synthesis (``synth_none``, ``synth_synthseg``: ``Synthesizer`` on the batch's label maps,
trainer default preset and the SynthSeg preset) is timed in the same loop for its share of a training step.

Measurements:

- time: median of ``reps`` steps per mode after ``warmup`` untimed ones; modes interleaved, order rotated every
  round, so load drifts on a shared machine hit every mode alike. Ratios are to ``plain_<same opt>``.
- peak memory (``mem``): the highest amount of tensor memory allocated during one step above what was allocated
  before it, from ``torch.profiler`` allocation events (deterministic, unaffected by other processes).
- peak RSS (``rss``, full runs, main cases): one fresh process per mode (``--child``) runs three steps; its peak
  resident size (``VmHWM``; ``resource.getrusage``'s ``ru_maxrss`` would include the parent's resident size at
  spawn time) minus the resident size before the first step: the step's own resident memory on top of the
  interpreter, libraries, model and data (which are reported too).
- scaling: plain/exact/fd with Adam over image sizes (2D 64..256 batch 8, 3D 32..96 batch 1), fewer repetitions.
- breakdown: phases of the exact and fd meta-steps (forward/backward passes, second-order backward) timed
  separately, and the autograd nodes of the second-order backward from ``torch.profiler`` -- what bounds the
  ratios.
- trainer: end-to-end seconds per step of every method (``run.step(step)`` after
  ``learn2synth.train.setup``; synthesis, augmentation and data drawing included), interleaved.

Usage::

    .venv/bin/python benchmarks/meta_step.py                 # full run, writes benchmarks/results/meta_step.md
    .venv/bin/python benchmarks/meta_step.py --quick --json  # 2D case only, under 2 minutes; one JSON object

(A full run takes about 10 minutes on an idle 2-core machine, several times longer on a busy one.)
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from learn2synth.augment.parametric import ParametricAugmenter
from learn2synth.losses import get_loss
from learn2synth.meta.hypergrad import meta_step, plain_step
from learn2synth.meta.optim import SGD, Adam
from learn2synth.nets import build_segmenter
from learn2synth.synth import Synthesizer, phantom_labels
from learn2synth.train_config import load_train_config

THREADS = 2
N_CLASSES = 6
CHANNELS = (16, 32, 64, 128)
#: name -> (spatial shape, batch)
CASES = {"2d": ((128, 128), 8), "3d": ((64, 64, 64), 1)}
SCALING = {"2d": ([(64, 64), (128, 128), (256, 256)], 8), "3d": ([(32, 32, 32), (64, 64, 64), (96, 96, 96)], 1)}
OPTIMIZERS: dict[str, Callable] = {"sgd": lambda: SGD(lr=0.01, momentum=0.9), "adam": lambda: Adam(lr=2e-3)}
META_KINDS = ("exact", "fd", "fd_onesided")  # meta.mode values timed against the plain step
# fd_onesided with a real batch half the synthetic one (real_batch_size = batch_size / 2; cases with batch >= 2)
HALF_REAL = "fd_onesided-halfreal"
STEP_MODES = tuple(f"{kind}_{opt}" for opt in OPTIMIZERS for kind in ("plain", *META_KINDS, HALF_REAL))
SYNTH_MODES = ("synth_none", "synth_synthseg")
# each mode every step without debias (the former defaults' shape), then what each default adds; pinned, so that
# the rows keep their meaning whatever TrainConfig's defaults are
EVERY_STEP = ["method=learn2synth", "meta.meta_every=1", "meta.debias=false"]
METHOD_RUNS = {  # trainer runs: name -> config overrides
    "synthseg": ["method=synthseg"],
    "real": ["method=real"],
    "mixed": ["method=mixed"],
    "finetune": ["method=finetune"],
    "learn2synth_exact": [*EVERY_STEP, "meta.mode=exact"],
    "learn2synth_fd": [*EVERY_STEP, "meta.mode=fd"],
    "learn2synth_fd_onesided": [*EVERY_STEP, "meta.mode=fd_onesided"],
    # a cheaper configuration: one meta-step every 4 steps (plain augmented steps in between)
    "learn2synth_fd_onesided_every4": [*EVERY_STEP, "meta.mode=fd_onesided", "meta.meta_every=4"],
    # meta.debias: its reference gradient from an extra synthetic pass, or from the next step's own (deferred)
    "learn2synth_fd_onesided_debias": [*EVERY_STEP, "meta.mode=fd_onesided", "meta.debias=true",
                                       "meta.debias_reference=extra"],
    "learn2synth_fd_onesided_debias_next": [*EVERY_STEP, "meta.mode=fd_onesided", "meta.debias=true",
                                            "meta.debias_reference=next"],
    "learn2synth_default": ["method=learn2synth"],  # whatever TrainConfig's defaults are (train_ratio_default)
}
#: trainer steps are timed over whole meta_every cycles (a multiple of this many steps)
TRAINER_CYCLE = 4
RESULTS = Path(__file__).resolve().parent / "results" / "meta_step.md"
KEEP = "<!-- Everything below this line is kept when the benchmark rewrites this file. -->"
MB = 2.0**20


# -- the problem ---------------------------------------------------------------------------------------------
def _synthesizer(preset: str) -> Synthesizer:
    return Synthesizer(load_train_config(None, [f"synth_preset={preset}"]).synth)


class Problem:
    """A segmenter, a synthetic and a real batch, an augmenter draw and warm optimizer states; steps by name."""

    def __init__(self, shape, batch: int, channels=CHANNELS, seed: int = 0):
        dims = len(shape)
        g = torch.Generator().manual_seed(seed)
        self.synth = {"none": _synthesizer("none"), "synthseg": _synthesizer("synthseg")}
        self.labels = phantom_labels(batch, shape, N_CLASSES, generator=g)
        with torch.no_grad():
            self.x, self.y, _ = self.synth["none"](self.labels, g)
            held_out = phantom_labels(batch, shape, N_CLASSES, generator=g)
            hidden = ParametricAugmenter(noise_init=0.1, bias_init=0.5)
            self.xr, self.yr = hidden(self.synth["none"](held_out, g).image, g), held_out
        self.synth_generator = g
        torch.manual_seed(seed)
        self.net = build_segmenter(dims, 1, N_CLASSES, channels=tuple(channels), num_res_units=1, norm="instance",
                                   act="gelu")
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in self.net.named_parameters()}
        self.augmenter = ParametricAugmenter()
        self.draws = self.augmenter.sample(self.x, g)
        self.theta = [p for p in self.augmenter.parameters() if p.requires_grad]
        self.loss_fn = get_loss("dice_ce")
        self.opts, self.states = {}, {}
        for name, make in OPTIMIZERS.items():
            opt = make()
            # the state after one step (non-zero moments / a momentum buffer), from random gradients: no pass
            grads = {k: 1e-3 * torch.randn(p.shape, generator=g) for k, p in self.params.items()}
            with torch.no_grad():
                _, self.states[name] = opt.step(self.params, grads, opt.init(self.params))
            self.opts[name] = opt

    def loss(self, params, x, y):
        return self.loss_fn(torch.func.functional_call(self.net, params, (x,)), y)

    def synth_loss(self, params):
        return self.loss(params, self.augmenter.apply(self.x, self.draws), self.y)

    def real_loss(self, params):
        return self.loss(params, self.xr, self.yr)

    def real_half_loss(self, params):
        half = max(len(self.xr) // 2, 1)
        return self.loss(params, self.xr[:half], self.yr[:half])

    def step(self, mode: str) -> Callable[[], object]:
        kind, _, opt_name = mode.rpartition("_")
        if kind == "synth":
            synth = self.synth[opt_name]
            return lambda: synth(self.labels, self.synth_generator)
        opt, state = self.opts[opt_name], self.states[opt_name]
        if kind == "plain":
            return lambda: plain_step(self.net, self.params, opt, state, lambda p: self.loss(p, self.x, self.y))
        real, mode = (self.real_half_loss, "fd_onesided") if kind == HALF_REAL else (self.real_loss, kind)
        return lambda: meta_step(self.net, self.params, opt, state, self.synth_loss, real, self.theta, mode=mode)


# -- measurements ----------------------------------------------------------------------------------------------
def time_modes(fns: dict[str, Callable], reps: int, warmup: int, loads: list | None = None) -> dict[str, list[float]]:
    """Seconds per call of each function; calls interleaved, order rotated every round.

    ``loads`` (if given) receives the 1-minute load average after every round.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for r in range(reps):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
        if loads is not None:
            loads.append(os.getloadavg()[0])
    return times


def peak_allocated(fn: Callable) -> float | None:
    """Peak tensor memory (MiB) allocated during one call of ``fn`` above the level before it (torch profiler).

    The allocation events of the profiler's event tree, summed in time order. ``torch.autograd.profiler`` rather
    than ``torch.profiler``, which imports torch._dynamo (seconds) on first use.
    """
    from torch.autograd.profiler import profile

    try:
        from torch._C._profiler import _EventType
    except ImportError:  # private API moved: no profiler memory on this torch
        return None
    fn()  # warm: one-time allocations (caches, lazy initializations) are not the step's
    with profile(profile_memory=True, use_kineto=True) as prof:
        fn()
    events, stack = [], list(prof.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation:
            events.append((event.start_time_ns, event.extra_fields.alloc_size))
        stack.extend(event.children)
    events.sort()
    level = peak = 0
    for _, size in events:
        level += size
        peak = max(peak, level)
    return peak / MB


def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status (``VmRSS``: resident now, ``VmHWM``: its peak), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child_main(spec: dict) -> dict:
    """In a fresh process: build the problem, run one mode three times, report its resident memory.

    The peak is ``VmHWM`` (the peak resident size of this process's memory map), and ``ru_maxrss`` is reported
    beside it: the latter also counts the memory map the process had before ``exec``, i.e. the parent's resident
    size when it spawned the child, so it is only meaningful when the parent is smaller than the child.
    """
    torch.set_num_threads(spec.get("threads", THREADS))
    problem = Problem(tuple(spec["shape"]), spec["batch"], tuple(spec["channels"]))
    fn = problem.step(spec["mode"])
    gc.collect()
    before, hwm_before = _status_mb("VmRSS"), _status_mb("VmHWM")
    for _ in range(3):
        fn()
    peak = _status_mb("VmHWM")
    return {"rss_before_mb": before, "hwm_before_mb": hwm_before, "peak_rss_mb": peak, "rss_step_mb": peak - before,
            "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def rss_in_child(shape, batch, channels, mode, threads: int = THREADS) -> dict:
    spec = {"shape": list(shape), "batch": batch, "channels": list(channels), "mode": mode, "threads": threads}
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def breakdown(problem: Problem, opt_name: str, reps: int) -> dict:
    """Phases of the meta-steps, timed one by one (medians), as ``meta.hypergrad`` runs them.

    ``fwd``/``bwd``: forward pass / backward to the weights (the plain step); ``input_bwd``: backward to the
    image only, weights fixed (each perturbed pass of the fd mode); exact mode: synthetic forward, backward with
    ``create_graph=True``, real forward + backward, the optimizer's vjp, and the second-order backward from the
    inner gradient to the augmenter parameters.
    """
    opt, state = problem.opts[opt_name], problem.states[opt_name]
    params = problem.params
    keys = list(params)
    fixed = {k: p.detach() for k, p in params.items()}

    def phases():
        out = {}
        t = [time.perf_counter()]

        def lap(name):
            t.append(time.perf_counter())
            out[name] = t[-1] - t[-2]

        loss = problem.loss(params, problem.x, problem.y)
        lap("plain.fwd")
        torch.autograd.grad(loss, list(params.values()))
        lap("plain.bwd")
        xa = problem.augmenter.apply(problem.x, problem.draws)
        loss = problem.loss(fixed, xa, problem.y)
        lap("fd.perturbed.fwd")
        torch.autograd.grad(loss, problem.theta)
        lap("fd.perturbed.input_bwd")
        loss = problem.synth_loss(params)
        lap("exact.synth.fwd")
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        lap("exact.synth.bwd_create_graph")
        with torch.no_grad():
            new, _ = opt.step(params, dict(zip(keys, [g.detach() for g in grads], strict=True)), state)
        new = {k: p.detach().requires_grad_(True) for k, p in new.items()}
        lap("exact.opt_step")
        loss = problem.real_loss(new)
        v = torch.autograd.grad(loss, list(new.values()))
        lap("exact.real.fwd_bwd")
        w = opt.vjp(params, {k: g.detach() for k, g in zip(keys, grads, strict=True)}, state,
                    dict(zip(keys, v, strict=True)))
        lap("exact.opt_vjp")
        torch.autograd.grad(grads, problem.theta, [w[k] for k in keys])
        lap("exact.second_order_bwd")
        return out

    phases()
    runs = [phases() for _ in range(reps)]
    return {name: statistics.median(r[name] for r in runs) for name in runs[0]}


def second_order_profile(problem: Problem, opt_name: str) -> list[tuple[str, float]]:
    """Share of the second-order backward's CPU time per autograd node type (torch profiler, one run)."""
    from torch.autograd.profiler import profile

    opt, state = problem.opts[opt_name], problem.states[opt_name]
    params = problem.params
    keys = list(params)
    for _ in range(2):  # the first run warms up
        loss = problem.synth_loss(params)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        w = opt.vjp(params, {k: g.detach() for k, g in zip(keys, grads, strict=True)}, state,
                    {k: torch.randn_like(g) * 1e-3 for k, g in zip(keys, grads, strict=True)})
        with profile(use_kineto=True) as prof:
            torch.autograd.grad(grads, problem.theta, [w[k] for k in keys])
    prefix = "autograd::engine::evaluate_function: "
    nodes = [(e.key[len(prefix):], e.cpu_time_total) for e in prof.key_averages() if e.key.startswith(prefix)]
    total = sum(t for _, t in nodes) or 1.0
    return sorted(((name, t / total) for name, t in nodes), key=lambda item: -item[1])


def trainer_steps(shape, batch: int, channels, reps: int, warmup: int, threads: int = THREADS) -> dict:
    """Mean seconds per step of each training method, end to end (``run.step(step)``).

    A mean, not a median: with ``meta.meta_every > 1`` the steps alternate between meta-steps and plain ones, and
    the cost of a run is their mean. ``reps`` is rounded up to whole cycles of :data:`TRAINER_CYCLE` steps.

    ``setup`` seeds the global RNGs and sets the thread count: both are restored on return.
    """
    from learn2synth.methods import METHODS
    from learn2synth.train import setup

    saved = torch.get_num_threads(), torch.random.get_rng_state()
    try:
        return _trainer_steps(METHODS, setup, shape, batch, channels, reps, warmup, threads)
    finally:
        torch.set_num_threads(saved[0])
        torch.random.set_rng_state(saved[1])


def _trainer_steps(METHODS, setup, shape, batch, channels, reps, warmup, threads) -> dict:  # noqa: N803
    runs = {}
    reps = -(-reps // TRAINER_CYCLE) * TRAINER_CYCLE
    warmup = -(-warmup // TRAINER_CYCLE) * TRAINER_CYCLE if warmup else 0
    steps = warmup + reps
    for name, sets in METHOD_RUNS.items():
        config = load_train_config(None, [*sets, f"data.shape={list(shape)}", f"data.spatial_dims={len(shape)}",
                                          f"net.channels={list(channels)}", f"batch_size={batch}",
                                          f"real_batch_size={batch}", f"threads={threads}", "device=cpu",
                                          "data.phantom_count=16", "data.phantom_real.train_count=8",
                                          "data.phantom_real.test_count=2", f"steps={steps}"])
        run, _ = setup(config)
        runs[name] = (run, type(run).step)
    counters = dict.fromkeys(runs, 0)

    def advance(name):
        run, fn = runs[name]
        fn(run, counters[name])
        counters[name] += 1

    times = time_modes({name: (lambda name=name: advance(name)) for name in runs}, reps, warmup)
    return {name: statistics.fmean(t) for name, t in times.items()}


def hypergrad_cosines(problem: Problem, opt_name: str) -> dict:
    """Cosine similarity (and relative error) of each fd estimator's hypergradient to the exact mode's, on the
    benchmark's problem (one meta-step from the same state; theta = noise sigma and the three bias exponents)."""
    opt, state = problem.opts[opt_name], problem.states[opt_name]

    def hypergrad(kind, real=problem.real_loss):
        result = meta_step(problem.net, problem.params, opt, state, problem.synth_loss, real, problem.theta,
                           mode=kind)
        return torch.cat([h.detach().flatten().double() for h in result.hypergrads])

    def compare(est, exact):
        return {"cosine": float(torch.nn.functional.cosine_similarity(est, exact, dim=0)),
                "rel_error": float((est - exact).norm() / exact.norm())}

    exact = hypergrad("exact")
    out = {kind: compare(hypergrad(kind), exact) for kind in META_KINDS[1:]}
    if len(problem.xr) >= 2:  # against the exact hypergradient of the same (half) real batch
        out[HALF_REAL] = compare(hypergrad("fd_onesided", problem.real_half_loss),
                                 hypergrad("exact", problem.real_half_loss))
    return out


# -- the benchmark -------------------------------------------------------------------------------------------------
def _ratios(result: dict, seconds: dict, mem: dict, suffix: str, opts) -> None:
    for opt in opts:
        for kind in (*META_KINDS, HALF_REAL):
            if f"{kind}_{opt}" not in seconds:
                continue
            base, mode = f"plain_{opt}", f"{kind}_{opt}"
            result[f"time_ratio_{kind}_{opt}{suffix}"] = seconds[mode] / seconds[base]
            ok = mem.get(mode) and mem.get(base)
            result[f"mem_ratio_{kind}_{opt}{suffix}"] = mem[mode] / mem[base] if ok else None


def run_benchmark(cases=None, scaling=None, channels=CHANNELS, opts=tuple(OPTIMIZERS), reps: int = 10,
                  warmup: int = 2, scaling_reps: int = 7, rss: bool = True, trainer: bool = True,
                  profile: bool = True, threads: int = THREADS, log: Callable[[str], None] | None = None,
                  trainer_reps: int | None = None) -> dict:
    """Run every measurement; returns a dict (flat keys for the headline numbers, details under ``cases``).

    Flat keys: ``time_ratio_<exact|fd>_<opt>_<case>``, ``mem_ratio_..._<case>`` (profiler peaks),
    ``rss_ratio_..._<case>`` (child processes, when ``rss``), the 2D case also without the ``_<case>`` suffix and,
    for Adam (the trainer's default), as ``time_ratio_exact``, ``time_ratio_fd``, ``mem_ratio_exact``,
    ``mem_ratio_fd``; ``synth_share_<preset>_<case>``; ``steps_per_s_<method>`` (trainer).
    """
    cases = CASES if cases is None else cases
    scaling = SCALING if scaling is None else scaling
    log = log or (lambda message: None)
    torch.set_num_threads(threads)
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "reps": reps, "warmup": warmup,
              "channels": list(channels), "opts": list(opts), "cases": {}, "scaling": {}}
    step_modes = [m for m in STEP_MODES if m.rpartition("_")[2] in opts]
    main_sizes = {}
    for case, (shape, batch) in cases.items():
        log(f"{case}: {'x'.join(map(str, shape))} batch {batch}: timing {', '.join(step_modes)}")
        problem = Problem(shape, batch, channels)
        modes = [m for m in step_modes if batch >= 2 or not m.startswith(HALF_REAL)]
        fns = {mode: problem.step(mode) for mode in (*modes, *SYNTH_MODES)}
        load = []
        times = time_modes(fns, reps, warmup, load)
        seconds = {mode: statistics.median(t) for mode, t in times.items()}
        log(f"{case}: peak memory (profiler)")
        mem = {mode: peak_allocated(fns[mode]) for mode in modes}
        info = {"shape": list(shape), "batch": batch, "times": times, "median_seconds": seconds, "mem_mb": mem,
                "timing_load": load}
        suffix = f"_{case}"
        _ratios(result, seconds, mem, suffix, opts)
        for preset in ("none", "synthseg"):
            t_synth = seconds[f"synth_{preset}"]
            for opt in opts:
                for kind in ("plain", *META_KINDS):
                    info.setdefault("synth_share", {})[f"{preset}_{kind}_{opt}"] = (
                        t_synth / (t_synth + seconds[f"{kind}_{opt}"]))
            main = "adam" if "adam" in opts else opts[0]
            result[f"synth_share_{preset}{suffix}"] = info["synth_share"][f"{preset}_plain_{main}"]
        if rss:
            info["rss"] = {}
            for mode in modes:
                log(f"{case}: resident memory of {mode} (child process)")
                info["rss"][mode] = rss_in_child(shape, batch, channels, mode, threads)
            for opt in opts:
                for kind in [k for k in (*META_KINDS, HALF_REAL) if f"{k}_{opt}" in info["rss"]]:
                    result[f"rss_ratio_{kind}_{opt}{suffix}"] = (
                        info["rss"][f"{kind}_{opt}"]["rss_step_mb"] / info["rss"][f"plain_{opt}"]["rss_step_mb"])
        main = "adam" if "adam" in opts else opts[0]
        log(f"{case}: hypergradient of each fd estimator against the exact mode ({main})")
        info["hypergrad_vs_exact"] = hypergrad_cosines(problem, main)
        for kind, values in info["hypergrad_vs_exact"].items():
            result[f"cosine_{kind}{suffix}"] = values["cosine"]
        if profile:
            log(f"{case}: phase breakdown and second-order profile ({main})")
            info["breakdown"] = breakdown(problem, main, max(3, reps // 2))
            info["second_order_nodes"] = second_order_profile(problem, main)
        result["cases"][case] = info
        main_sizes[case] = (tuple(shape), batch, seconds, mem, load)
        del problem, fns

    for case, (shapes, batch) in (scaling or {}).items():
        rows = []
        for shape in shapes:
            reuse = main_sizes.get(case)
            if reuse and reuse[0] == tuple(shape) and reuse[1] == batch and "adam" in opts:
                seconds, mem, load = reuse[2], reuse[3], reuse[4]
                reused = True
            else:
                log(f"scaling {case}: {'x'.join(map(str, shape))} batch {batch}")
                problem = Problem(shape, batch, channels)
                fns = {mode: problem.step(mode) for mode in ("plain_adam", "exact_adam", "fd_adam")}
                load = []
                times = time_modes(fns, scaling_reps, 1, load)
                seconds = {mode: statistics.median(t) for mode, t in times.items()}
                mem = {mode: peak_allocated(fn) for mode, fn in fns.items()}
                reused = False
                del problem, fns
            rows.append({"shape": list(shape), "batch": batch, "reused_main_case": reused, "timing_load": load,
                         "seconds": {m: seconds[m] for m in ("plain_adam", "exact_adam", "fd_adam")},
                         "mem_mb": {m: mem[m] for m in ("plain_adam", "exact_adam", "fd_adam")}})
        result["scaling"][case] = rows

    if trainer and "2d" in cases:
        shape, batch = cases["2d"]
        log(f"trainer: end-to-end steps of {', '.join(METHOD_RUNS)} at 2d {'x'.join(map(str, shape))} batch {batch}")
        per_step = trainer_steps(shape, batch, channels, reps=trainer_reps or max(3, reps // 2), warmup=1,
                                 threads=threads)
        result["trainer_seconds_per_step"] = per_step
        for name, sec in per_step.items():
            result[f"steps_per_s_{name}"] = 1.0 / sec
            result[f"train_ratio_{name.removeprefix('learn2synth_')}"] = sec / per_step["synthseg"]
        result["train_default_meta"] = {k: v for k, v in
                                        vars(load_train_config(None, ["method=learn2synth"]).meta).items()}

    if "2d" in cases:  # the headline keys: 2D, Adam (the trainer's default optimizer)
        main = "adam" if "adam" in opts else opts[0]
        for key in [k for k in list(result) if k.endswith("_2d")]:
            result[key[: -len("_2d")]] = result[key]
        for kind in (*META_KINDS, HALF_REAL):
            if f"time_ratio_{kind}_{main}" not in result:
                continue
            result[f"time_ratio_{kind}"] = result[f"time_ratio_{kind}_{main}"]
            result[f"mem_ratio_{kind}"] = result[f"mem_ratio_{kind}_{main}"]
            if rss:
                result[f"rss_ratio_{kind}"] = result[f"rss_ratio_{kind}_{main}"]
    return result


# -- the report ----------------------------------------------------------------------------------------------------
def _fmt(value, spec=".2f", none="-"):
    return none if value is None else format(value, spec)


def _x(value):
    return "-" if value is None else f"{value:.2f}x"


def _load_range(result: dict) -> str:
    samples = result.get("load_samples")
    return f", between phases {min(samples):.2f}..{max(samples):.2f}" if samples else ""


def format_report(result: dict, command: str, load: tuple) -> str:
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = [
        "# Meta-step cost: learn2synth (exact, fd) against a plain synthseg step",
        "",
        f"- Command: `{command}`",
        f"- Date: {date}; torch {result['torch']}; torch threads: {result['threads']}; CPUs: {os.cpu_count()} "
        f"({platform.processor() or platform.machine()}); load average (1 min) at start / end: "
        f"{load[0]:.2f} / {load[1]:.2f}{_load_range(result)} (shared machine)",
        f"- Segmenter: MONAI U-Net from `build_segmenter`, channels {tuple(result['channels'])}, one residual unit, "
        f"instance norm, GELU; {N_CLASSES} classes; Dice + CE. Augmenter: `ParametricAugmenter()` (noise sigma, "
        "bias exponents at 2/4/8 control points). Real batch = synthetic batch size.",
        f"- Time: median of {result['reps']} steps per mode after {result['warmup']} warm-up round(s), modes "
        "interleaved with rotating order. Memory: peak tensor memory allocated during a step (torch.profiler "
        "allocation events); RSS: peak resident size (`VmHWM`) of a fresh process per mode over 3 steps, minus its "
        "resident size before the first (interpreter, libraries, model and data excluded; they are listed).",
        "",
        "## Ratios to the plain step (same optimizer)",
        "",
        "| case (load over the timing rounds) | optimizer | plain s | exact s | fd s | fd_onesided s | "
        "exact / plain time | fd / plain time | fd_onesided / plain time | plain MiB | exact / plain mem | "
        "fd / plain mem | fd_onesided / plain mem | exact / plain RSS | fd / plain RSS | fd_onesided / plain RSS |",
        "|---|---|" + "---:|" * 14,
    ]
    for case, info in result["cases"].items():
        label = f"{case} {info['batch']}x{'x'.join(map(str, info['shape']))}"
        if "timing_load" in info:
            label += f" ({min(info['timing_load']):.1f}..{max(info['timing_load']):.1f})"
        s, m = info["median_seconds"], info["mem_mb"]
        for opt in result["opts"]:
            rss = info.get("rss", {})
            rss_ratio = {kind: (rss[f"{kind}_{opt}"]["rss_step_mb"] / rss[f"plain_{opt}"]["rss_step_mb"]
                                if rss else None) for kind in META_KINDS}
            lines.append(
                f"| {label} | {opt} | {s[f'plain_{opt}']:.3f} | "
                + " | ".join(f"{s[f'{kind}_{opt}']:.3f}" for kind in META_KINDS) + " | "
                + " | ".join(f"**{result[f'time_ratio_{kind}_{opt}_{case}']:.2f}x**" for kind in META_KINDS)
                + f" | {_fmt(m[f'plain_{opt}'], '.0f')} | "
                + " | ".join(_x(result[f"mem_ratio_{kind}_{opt}_{case}"]) for kind in META_KINDS) + " | "
                + " | ".join(_x(rss_ratio[kind]) for kind in META_KINDS) + " |")
    half = [(case, info, opt) for case, info in result["cases"].items() for opt in result["opts"]
            if f"time_ratio_{HALF_REAL}_{opt}_{case}" in result]
    if half:
        lines += ["", "fd_onesided with a real batch half the synthetic one (`real_batch_size` = `batch_size` / 2; the "
                  "real pass at phi' costs half; cases with batch >= 2):", "",
                  "| case | optimizer | s | / plain time | / plain mem | / plain RSS |",
                  "|---|---|---:|---:|---:|---:|"]
        for case, info, opt in half:
            rss = info.get("rss", {})
            rss_ratio = (rss[f"{HALF_REAL}_{opt}"]["rss_step_mb"] / rss[f"plain_{opt}"]["rss_step_mb"]
                         if f"{HALF_REAL}_{opt}" in rss else None)
            lines.append(f"| {case} | {opt} | {info['median_seconds'][f'{HALF_REAL}_{opt}']:.3f} | "
                         f"**{result[f'time_ratio_{HALF_REAL}_{opt}_{case}']:.2f}x** | "
                         f"{_x(result[f'mem_ratio_{HALF_REAL}_{opt}_{case}'])} | {_x(rss_ratio)} |")
    lines += ["", "Targets (issue 13): fd_onesided <= 2.5x plain-step time in 2D and 3D with cosine similarity to "
              "exact >= 0.99 and peak memory <= 1.3x; exact <= 3.5x; the trainer's default learn2synth step <= 1.5x "
              "a synthseg step.", "",
              "Hypergradient against the exact mode (same state, same batch; theta = noise sigma + 3 bias "
              "exponents): cosine similarity / relative error", ""]
    for case, info in result["cases"].items():
        if "hypergrad_vs_exact" in info:
            lines.append(f"- {case}: " + "; ".join(f"{kind} {v['cosine']:.5f} / {100 * v['rel_error']:.2f}%"
                                                   for kind, v in info["hypergrad_vs_exact"].items()))
    lines.append("")
    for case, info in result["cases"].items():
        if "rss" in info:
            lines += [f"RSS per process, {case} (MiB; before the first step / peak / the step's own):", ""]
            lines += [f"- {mode}: {r['rss_before_mb']:.0f} / {r['peak_rss_mb']:.0f} / {r['rss_step_mb']:.0f}"
                      for mode, r in info["rss"].items()]
            lines.append("")

    if result["scaling"]:
        lines += ["## Scaling with image size (Adam)", "",
                  "| case | size | load | plain s | exact / plain | fd / plain | plain MiB | exact / plain mem | "
                  "fd / plain mem |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for case, rows in result["scaling"].items():
            for row in rows:
                s, m = row["seconds"], row["mem_mb"]
                mem_ok = m["plain_adam"]
                lines.append(
                    f"| {case} batch {row['batch']} | {'x'.join(map(str, row['shape']))} | "
                    f"{min(row['timing_load']):.1f}..{max(row['timing_load']):.1f} | {s['plain_adam']:.3f} | "
                    f"{s['exact_adam'] / s['plain_adam']:.2f}x | {s['fd_adam'] / s['plain_adam']:.2f}x | "
                    f"{_fmt(m['plain_adam'], '.0f')} | "
                    f"{_x(m['exact_adam'] / mem_ok if mem_ok else None)} | "
                    f"{_x(m['fd_adam'] / mem_ok if mem_ok else None)} |")
        lines += ["", "Sizes that are a main case reuse its numbers; the others are medians of fewer steps "
                  "(see `--scaling-reps`).", ""]

    lines += ["## Synthesis share of a training step", "",
              "`Synthesizer` on the batch's label maps vs the step on the synthesized batch: "
              "synthesis / (synthesis + step).", "",
              "| case | preset | synthesis s | share of a synthseg step | share of an exact meta-step | "
              "share of an fd meta-step |", "|---|---|---:|---:|---:|---:|"]
    main = "adam" if "adam" in result["opts"] else result["opts"][0]
    for case, info in result["cases"].items():
        for preset in ("none", "synthseg"):
            share = info["synth_share"]
            lines.append(f"| {case} | {preset}{' (trainer default)' if preset == 'none' else ''} | "
                         f"{info['median_seconds'][f'synth_{preset}']:.3f} | "
                         f"{100 * share[f'{preset}_plain_{main}']:.1f}% | "
                         f"{100 * share[f'{preset}_exact_{main}']:.1f}% | {100 * share[f'{preset}_fd_{main}']:.1f}% |")
    lines.append("")

    if "trainer_seconds_per_step" in result:
        per_step = result["trainer_seconds_per_step"]
        shape, batch = result["cases"]["2d"]["shape"], result["cases"]["2d"]["batch"]
        default = result.get("train_default_meta", {})
        lines += [f"## End-to-end trainer steps (2D {batch}x{'x'.join(map(str, shape))}, Adam, phantoms, "
                  "synthesis preset none)", "",
                  "Mean seconds per step over whole cycles of 4 steps (a run's cost when meta.meta_every > 1). "
                  f"`learn2synth_default` is TrainConfig's default meta config ({default}); "
                  f"train_ratio_default = {_x(result.get('train_ratio_default'))}.", "",
                  "| method | s / step | steps / s | vs synthseg |", "|---|---:|---:|---:|"]
        for name, sec in per_step.items():
            lines.append(f"| {name} | {sec:.3f} | {1 / sec:.2f} | {sec / per_step['synthseg']:.2f}x |")
        lines += ["", "`finetune` alternates as in a run of this length (synthetic steps, then real ones).", ""]

    for case, info in result["cases"].items():
        if "breakdown" not in info:
            continue
        b = info["breakdown"]
        plain = b["plain.fwd"] + b["plain.bwd"]
        lines += [f"## Where the time goes ({case}, {main}; phases timed separately, medians)", "",
                  "| phase | s | plain steps |", "|---|---:|---:|"]
        lines += [f"| {name} | {sec:.3f} | {sec / plain:.2f} |" for name, sec in b.items()]
        first_order = (b["exact.synth.fwd"] + b["exact.synth.bwd_create_graph"] + b["exact.real.fwd_bwd"]) / plain
        fd_floor = 2 + 2 * (b["fd.perturbed.fwd"] + b["fd.perturbed.input_bwd"]) / plain
        lines += ["", f"- exact: the first-order part alone (synthetic forward + backward, real forward + backward) "
                  f"is {first_order:.2f} plain steps; the second-order backward adds "
                  f"{b['exact.second_order_bwd'] / plain:.2f}.",
                  f"- fd: two plain-sized passes + two perturbed passes (forward + backward to the image) = "
                  f"{fd_floor:.2f} plain steps; fd_onesided: one perturbed pass = {fd_floor - fd_floor / 2 + 1:.2f}.",
                  "",
                  "Second-order backward by autograd node (share of its CPU time):", ""]
        lines += [f"- {name}: {100 * share:.1f}%" for name, share in info["second_order_nodes"][:8]]
        lines.append("")
    return "\n".join(lines)


def write_report(text: str, path: Path) -> None:
    """Write the generated report, keeping any hand-written notes below the ``KEEP`` marker."""
    kept = ""
    if path.exists():
        old = path.read_text()
        if KEEP in old:
            kept = old[old.index(KEEP) + len(KEEP):]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n" + KEEP + (kept if kept else "\n"))


def _json_safe(result: dict) -> dict:
    flat = {k: v for k, v in result.items() if k not in ("cases", "scaling")}
    flat["median_seconds"] = {case: c["median_seconds"] for case, c in result["cases"].items()}
    flat["mem_mb"] = {case: c["mem_mb"] for case, c in result["cases"].items()}
    flat["scaling"] = result["scaling"]
    return flat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2D case, Adam, 3 steps per mode, no RSS/scaling/trainer/breakdown (under 2 minutes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout (report on stderr)")
    parser.add_argument("--reps", type=int, help="timed steps per mode (default 10, quick 3)")
    parser.add_argument("--warmup", type=int, help="untimed rounds before timing (default 2, quick 1)")
    parser.add_argument("--scaling-reps", type=int, default=7, help="timed steps per size in the scaling sweep")
    parser.add_argument("--trainer-reps", type=int, default=24,
                        help="timed trainer steps per method, rounded up to whole cycles of 4 (default 24: a mean "
                             "over 6 cycles; train_ratio_default is a ratio of two such means)")
    parser.add_argument("--out", type=Path, help="results file (default benchmarks/results/meta_step.md); full runs "
                        "write it, --quick runs only when --out is given")
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child_main(json.loads(args.child))))
        return 0
    reps = args.reps or (3 if args.quick else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    info = sys.stderr if args.json else sys.stdout

    loads = []

    def log(message):
        loads.append(os.getloadavg()[0])
        print(f"[{time.strftime('%H:%M:%S')}] (load {loads[-1]:.2f}) {message}", file=sys.stderr, flush=True)

    load_start = os.getloadavg()[0]
    if args.quick:
        result = run_benchmark(cases={"2d": CASES["2d"]}, scaling={}, opts=("adam",), reps=reps, warmup=warmup,
                               rss=False, trainer=False, profile=False, log=log)
    else:
        result = run_benchmark(reps=reps, warmup=warmup, scaling_reps=args.scaling_reps, log=log,
                               trainer_reps=args.trainer_reps)
    loads.append(os.getloadavg()[0])
    result["load_samples"] = loads
    command = " ".join([".venv/bin/python", "benchmarks/meta_step.py",
                        *map(shlex.quote, argv if argv is not None else sys.argv[1:])])
    report = format_report(result, command, (load_start, os.getloadavg()[0]))
    print(report, file=info)
    if not args.no_write and (args.out or not args.quick):
        path = args.out or RESULTS
        write_report(report, path)
        print(f"wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(_json_safe(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
