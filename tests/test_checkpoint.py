import os
import pickle
import zipfile

import pytest
import torch

import learn2synth
from learn2synth import checkpoint as ckpt
from learn2synth.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from learn2synth.errors import InputError
from learn2synth.rng import capture_rng_state, make_generator


class WritesFileWhenUnpickled:
    """Unpickling this calls open(target, "w"): a stand-in for arbitrary code execution."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def small_save(path, step=1, **kwargs):
    return save_checkpoint(path, config={"lr": 0.1}, step=step, state={}, rng={}, **kwargs)


def adam_like_state_dict(net):
    """The layout of torch.optim.Adam.state_dict() (int keys, tuples, None, bools), built by hand because
    constructing a torch optimizer imports torch._dynamo, which costs seconds."""
    return {"state": {i: {"step": torch.tensor(3.0), "exp_avg": torch.randn_like(p), "exp_avg_sq": p.detach() ** 2}
                      for i, p in enumerate(net.parameters())},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
                              "foreach": None, "params": [0, 1]}]}


def test_round_trip_of_nets_optimizer_and_rng(tmp_path):
    net = torch.nn.Linear(3, 2)
    optimizer = adam_like_state_dict(net)
    rng = capture_rng_state({"synth": make_generator(0)})
    path = save_checkpoint(tmp_path / "run" / "a.pt", config={"train": {"lr": 1e-3, "steps": 10}}, step=7,
                           state={"net": net.state_dict(), "optimizer": optimizer}, rng=rng,
                           extra={"best_dice": 0.5})
    assert path == tmp_path / "run" / "a.pt"  # the folder was created
    loaded = load_checkpoint(path)
    assert loaded["format"] == "learn2synth-checkpoint" and loaded["version"] == 1
    assert loaded["learn2synth_version"] == learn2synth.__version__
    assert loaded["config"] == {"train": {"lr": 1e-3, "steps": 10}}
    assert loaded["step"] == 7 and loaded["extra"] == {"best_dice": 0.5}
    fresh = torch.nn.Linear(3, 2)
    fresh.load_state_dict(loaded["state"]["net"])
    assert torch.equal(fresh.weight, net.weight) and torch.equal(fresh.bias, net.bias)
    assert loaded["state"]["optimizer"]["param_groups"] == optimizer["param_groups"]
    for i, state in optimizer["state"].items():
        assert all(torch.equal(loaded["state"]["optimizer"]["state"][i][k], v) for k, v in state.items())
    assert torch.equal(loaded["rng"]["generators"]["synth"], rng["generators"]["synth"])


def test_extra_defaults_to_an_empty_dict(tmp_path):
    assert load_checkpoint(small_save(tmp_path / "a.pt"))["extra"] == {}


def test_file_is_flushed_to_disk_before_it_takes_the_final_name(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    small_save(tmp_path / "a.pt")
    assert events[:2] == ["fsync", "replace"]


@pytest.mark.parametrize("exception", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_interrupted_save_keeps_the_previous_file_and_leaves_no_temporary_file(tmp_path, monkeypatch,
                                                                              exception):
    path = small_save(tmp_path / "last.pt", step=1)
    real_save = torch.save

    def save_half_then_fail(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)
        file.truncate(file.tell() // 2)
        raise exception

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(type(exception)):
        small_save(path, step=2)
    assert os.listdir(tmp_path) == ["last.pt"]
    assert load_checkpoint(path)["step"] == 1


def test_payload_that_weights_only_would_refuse_is_not_written(tmp_path):
    path = small_save(tmp_path / "a.pt", step=1)
    with pytest.raises(TypeError, match="weights_only"):
        small_save(path, step=2, extra={"bad": WritesFileWhenUnpickled(tmp_path / "x")})
    assert os.listdir(tmp_path) == ["a.pt"]
    assert load_checkpoint(path)["step"] == 1


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file") as error:
        load_checkpoint(tmp_path / "nope.pt")
    assert error.value.path == str(tmp_path / "nope.pt")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_random_bytes(tmp_path):
    path = tmp_path / "a.pt"
    path.write_bytes(torch.randint(0, 256, (4096,), generator=make_generator(0), dtype=torch.uint8)
                     .numpy().tobytes())
    with pytest.raises(InputError, match="not a PyTorch checkpoint"):
        load_checkpoint(path)


def test_truncated_file(tmp_path):
    path = small_save(tmp_path / "a.pt")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_zip_that_is_not_a_torch_file(tmp_path):
    path = tmp_path / "a.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(InputError, match="cannot be read as a PyTorch checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [{"weights": torch.ones(2)}, torch.ones(2), {"format": "other"}])
def test_torch_file_that_is_not_ours(tmp_path, content):
    torch.save(content, tmp_path / "a.pt")
    with pytest.raises(InputError, match="not a learn2synth checkpoint"):
        load_checkpoint(tmp_path / "a.pt")


def test_future_version_asks_for_an_upgrade(tmp_path):
    torch.save({"format": "learn2synth-checkpoint", "version": 2}, tmp_path / "a.pt")
    with pytest.raises(InputError, match="version 2 is newer.*upgrade learn2synth"):
        load_checkpoint(tmp_path / "a.pt")


@pytest.mark.parametrize("version", [0, "1", None, True])
def test_nonsense_version(tmp_path, version):
    torch.save({"format": "learn2synth-checkpoint", "version": version}, tmp_path / "a.pt")
    with pytest.raises(InputError, match="unknown checkpoint format version"):
        load_checkpoint(tmp_path / "a.pt")


def test_incomplete_checkpoint_names_what_is_missing(tmp_path):
    torch.save({"format": "learn2synth-checkpoint", "version": 1, "config": {}, "step": 3}, tmp_path / "a.pt")
    with pytest.raises(InputError, match="missing state, rng, extra"):
        load_checkpoint(tmp_path / "a.pt")


@pytest.mark.parametrize("scan_first", [True, False], ids=["scanned", "torch.load-refuses"])
def test_malicious_pickle_is_refused_and_never_executed(tmp_path, monkeypatch, scan_first):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "learn2synth-checkpoint", "version": 1, "x": WritesFileWhenUnpickled(target)}, path)
    if not scan_first:  # the second line of defense: torch.load(weights_only=True) itself
        monkeypatch.setattr(ckpt, "_unsafe_globals", lambda path: [])
    with pytest.raises(InputError, match="refused.*open"):
        load_checkpoint(path)
    assert not target.exists()
    path.rename(tmp_path / "last.pt")  # latest_checkpoint reads the step of last.pt: same defenses
    small_save(checkpoint_path(tmp_path, 5), step=5)
    with pytest.raises(InputError, match="refused"):
        latest_checkpoint(tmp_path)
    assert not target.exists()


def test_plain_pickle_is_not_executed(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(WritesFileWhenUnpickled(target)))
    with pytest.raises(InputError, match="not a PyTorch checkpoint"):
        load_checkpoint(path)
    assert not target.exists()


def test_checkpoint_path_names():
    assert checkpoint_path("run", 100).name == "step_000100.pt"
    assert checkpoint_path("run", 12345678).name == "step_12345678.pt"


def test_latest_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    for step in (900, 1000, 50):
        small_save(checkpoint_path(tmp_path, step), step=step)
    (tmp_path / ".step_999999.pt.abc.tmp").write_bytes(b"partial")  # left by a killed save
    (tmp_path / "step_abc.pt").write_bytes(b"not ours")
    assert latest_checkpoint(tmp_path) == tmp_path / "step_001000.pt"
    small_save(tmp_path / "last.pt", step=1000)
    assert latest_checkpoint(tmp_path) == tmp_path / "last.pt"
    small_save(checkpoint_path(tmp_path, 1100), step=1100)  # killed before last.pt was rewritten
    assert latest_checkpoint(tmp_path) == tmp_path / "step_001100.pt"
    small_save(tmp_path / "last.pt", step=1200)
    assert latest_checkpoint(tmp_path) == tmp_path / "last.pt"


def test_latest_checkpoint_with_only_last(tmp_path):
    small_save(tmp_path / "last.pt", step=3)
    assert latest_checkpoint(tmp_path) == tmp_path / "last.pt"


def test_prune_keeps_the_newest_snapshots_and_last(tmp_path):
    for step in (10, 20, 30, 100, 200):
        checkpoint_path(tmp_path, step).write_bytes(b"x")
    (tmp_path / "last.pt").write_bytes(b"x")
    (tmp_path / "notes.txt").write_bytes(b"x")
    removed = prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in removed] == ["step_000010.pt", "step_000020.pt", "step_000030.pt"]
    assert sorted(os.listdir(tmp_path)) == ["last.pt", "notes.txt", "step_000100.pt", "step_000200.pt"]
    assert prune_checkpoints(tmp_path, keep=5) == []
    prune_checkpoints(tmp_path, keep=0)
    assert sorted(os.listdir(tmp_path)) == ["last.pt", "notes.txt"]
    with pytest.raises(ValueError, match="keep"):
        prune_checkpoints(tmp_path, keep=-1)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_saved_file_follows_the_umask_like_any_other_file(tmp_path):
    """Colleagues on a shared cluster can read checkpoints when the umask lets them (mkstemp would give 0600)."""
    old = os.umask(0o022)
    try:
        path = small_save(tmp_path / "a.pt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
