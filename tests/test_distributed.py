"""Two gloo processes with batch b take exactly the meta-steps one process takes with batch 2b."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from learn2synth.train import setup
from learn2synth.train_config import load_train_config

B, STEPS, SHAPE = 2, 3, (16, 16)


def config(mode):
    return load_train_config(None, [
        "method=learn2synth", f"meta.mode={mode}", "net.channels=[4,8]", f"data.shape={list(SHAPE)}",
        "data.phantom_count=4", "data.phantom_real.train_count=4", "data.phantom_real.test_count=1",
        "data.n_classes=4", "optim.name=sgd", "optim.lr=0.05", "optim.momentum=0.9", "augmenter.lr=0.05"])


def global_batches(run):
    """The same synthetic/real batches and augmentation draws for every process, for each step."""
    g = torch.Generator().manual_seed(123)
    out = []
    for _ in range(STEPS):
        labels = run.labels.batch(2 * B, SHAPE, g)
        x, y, _ = run.synth(labels, g)
        xr, yr = run.real.batch(2 * B, SHAPE, g)
        out.append((x, y, run.augmenter.sample(x, g), xr, yr))
    return out


def take(draws, part):
    return {k: [z[part] for z in v] if isinstance(v, list) else v[part] for k, v in draws.items()}


def train_on(run, batches, part):
    for step, (x, y, draws, xr, yr) in enumerate(batches):
        run.synth_batch = lambda n=None, x=x, y=y: (x[part], y[part])
        run.real_batch = lambda n=None, augment=False, xr=xr, yr=yr: (xr[part], yr[part])
        run.augmenter.sample = lambda x_, g, d=draws: take(d, part)
        run.step(step)
    return {"params": run.params, "augmenter": run.augmenter.state_dict()}


MODES = ("exact", "fd", "fd_onesided")


def worker(rank, world, port, folder):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from learn2synth.distributed import init_from_env

    info = init_from_env(torch.device("cpu"))
    for mode in MODES:
        reference, _ = setup(config(mode))  # undistributed copy, only to draw the global batches
        run, _ = setup(config(mode), info)
        result = train_on(run, global_batches(reference), slice(rank * B, (rank + 1) * B))
        state = {k: {n: t.detach() for n, t in v.items()} for k, v in result.items()}
        torch.save(state, f"{folder}/{mode}_rank{rank}.pt")
    # both ranks leave together: a rank tearing gloo down while the other still talks to it aborted process 0
    # (SIGABRT, 'terminate called without an active exception') in a CI run on a loaded machine
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    mp.spawn(worker, args=(2, free_port(), str(folder)), nprocs=2, join=True)
    return folder


@pytest.mark.parametrize("mode", MODES)
def test_two_processes_equal_one_process_with_double_batch(two_process_results, mode):
    tmp_path = two_process_results
    run, _ = setup(config(mode))
    single = train_on(run, global_batches(run), slice(0, 2 * B))
    for rank in range(2):
        got = torch.load(tmp_path / f"{mode}_rank{rank}.pt", weights_only=True)
        for part in ("params", "augmenter"):
            for name, value in single[part].items():
                torch.testing.assert_close(got[part][name], value.detach(), rtol=1e-5, atol=1e-5,
                                           msg=f"rank {rank} {part} {name}")
    init, _ = setup(config(mode))
    assert any(not torch.equal(init.params[k], single["params"][k]) for k in init.params)  # it did train
