import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from learn2synth.config import (
    apply_overrides,
    check_config,
    dump_yaml,
    from_dict,
    load_config,
    load_yaml,
    parse_override,
    to_dict,
)
from learn2synth.errors import ConfigError, InputError

# ---- example schema: the real training schema lives elsewhere; these exercise every supported annotation


@dataclass
class Optim:
    lr: float = field(default=1e-3, metadata={"range": (0, None), "open": "low"})
    momentum: float = field(default=0.0, metadata={"range": (0, 1), "open": "high"})
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={"range": (0, 1)})
    name: Literal["sgd", "adam"] = "sgd"


@dataclass
class Aug:
    kind: str  # required, inside an optional section
    strength: float = field(default=0.5, metadata={"range": (None, 1)})


@dataclass
class Train:
    steps: int = field(default=100, metadata={"range": (1, None)})
    seed: Optional[int] = None  # noqa: UP045 (typing.Optional must work too, not only `int | None`)
    optim: Optim = field(default_factory=Optim)
    finetune: Optim = field(default_factory=lambda: Optim(lr=1e-4, name="adam"))
    milestones: list[int] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=lambda: {"dice": 1.0}, metadata={"range": (0, None)})
    amp: bool = False
    out: Path = Path("runs")

    def validate(self):
        if self.milestones and max(self.milestones) > self.steps:
            raise ConfigError("milestones", f"must not exceed steps ({self.steps})")
        if self.amp and self.optim.name == "sgd" and self.optim.momentum == 0.5:
            raise ConfigError(None, "amp with sgd at momentum 0.5 is not supported")


@dataclass
class Experiment:
    name: str
    train: Train = field(default_factory=Train)
    aug: Aug | None = None
    sizes: tuple[int, ...] = (64, 64)
    mode: int | str = "auto"
    notes: Any = None


def build(**data):
    return from_dict(Experiment, {"name": "exp", **data})


def config_error(data, where=""):
    with pytest.raises(ConfigError) as error:
        from_dict(Experiment, {"name": "exp", **data}, where)
    return str(error.value)


# ---- from_dict


def test_defaults_and_nested_sections():
    cfg = build(train={"steps": 5, "optim": {"lr": 0.1}}, aug={"kind": "gmm"})
    assert cfg.train.steps == 5 and cfg.train.optim == Optim(lr=0.1)
    assert cfg.aug == Aug(kind="gmm") and cfg.sizes == (64, 64) and cfg.train.out == Path("runs")


def test_partial_section_keeps_the_fields_own_default():
    cfg = build(train={"finetune": {"momentum": 0.5}})
    assert cfg.train.finetune == Optim(lr=1e-4, momentum=0.5, name="adam")


def test_coercions():
    cfg = build(train={"optim": {"lr": 1, "betas": [0.5, 0.6]}, "steps": 1e4, "out": "x/y", "seed": 3},
                sizes=[32, 32, 16], mode=3)
    assert cfg.train.optim.lr == 1.0 and isinstance(cfg.train.optim.lr, float)
    assert cfg.train.steps == 10000 and isinstance(cfg.train.steps, int)
    assert cfg.train.optim.betas == (0.5, 0.6) and cfg.sizes == (32, 32, 16)
    assert cfg.train.out == Path("x/y") and cfg.train.seed == 3 and cfg.mode == 3
    assert build(mode="fast").mode == "fast"
    assert build(train={"seed": None}).train.seed is None


@pytest.mark.parametrize(("data", "message"), [
    ({"train": {"stpes": 3}}, "train.stpes: unknown key (did you mean 'steps'?)"),
    ({"zzz": 1}, "zzz: unknown key (valid keys: name, train, aug, sizes, mode, notes)"),
    ({"train": {"optim": {"lrr": 1}}}, "train.optim.lrr: unknown key (did you mean 'lr'?)"),
    ({"aug": {}}, "aug.kind: required key is missing"),
    ({"train": 3}, "train: expected a mapping of keys to values, got 3"),
    ({"train": {"steps": "ten"}}, "train.steps: expected an integer, got 'ten'"),
    ({"train": {"steps": 1.5}}, "train.steps: expected an integer, got 1.5"),
    ({"train": {"steps": True}}, "train.steps: expected an integer, got true"),
    ({"train": {"seed": "x"}}, "train.seed: expected an integer, got 'x'"),
    ({"train": {"optim": {"lr": "fast"}}}, "train.optim.lr: expected a number, got 'fast'"),
    ({"train": {"optim": {"lr": False}}}, "train.optim.lr: expected a number, got false"),
    ({"train": {"optim": {"lr": 10**400}}}, "train.optim.lr: number too large for a float (above 1.8e308)"),
    ({"train": {"amp": "yes"}}, "train.amp: expected true or false, got 'yes'"),
    ({"train": {"amp": 1}}, "train.amp: expected true or false, got 1"),
    ({"name": 3}, "name: expected a string, got 3"),
    ({"name": None}, "name: expected a string, got null"),
    ({"train": {"out": ""}}, "train.out: expected a path, got ''"),
    ({"train": {"optim": {"name": "adm"}}}, "train.optim.name: must be one of 'sgd', 'adam', got 'adm' "
                                            "(did you mean 'adam'?)"),
    ({"train": {"optim": {"name": 3}}}, "train.optim.name: must be one of 'sgd', 'adam', got 3"),
    ({"train": {"optim": {"betas": [0.9]}}}, "train.optim.betas: expected a list of 2 items, got 1: [0.9]"),
    ({"train": {"optim": {"betas": 0.9}}}, "train.optim.betas: expected a list, got 0.9"),
    ({"train": {"milestones": [1, "b"]}}, r"train.milestones[1]: expected an integer, got 'b'"),
    ({"train": {"weights": {"ce": "x"}}}, "train.weights.ce: expected a number, got 'x'"),
    ({"train": {"weights": {1: 1.0}}}, "train.weights.1: expected a string, got 1"),
    ({"train": {"weights": [1]}}, "train.weights: expected a mapping, got [1]"),
    ({"mode": 1.5}, "mode: expected an integer or a string, got 1.5"),
    ({"sizes": [1, None]}, "sizes[1]: expected an integer, got null"),
])
def test_error_messages_name_the_key(data, message):
    assert config_error(data) == message


def test_error_inside_a_larger_configuration_uses_the_prefix():
    assert config_error({"train": {"stpes": 1}}, where="experiment") == \
        "experiment.train.stpes: unknown key (did you mean 'steps'?)"
    with pytest.raises(ConfigError, match="^expected a mapping of keys to values, got \\[1\\]$"):
        from_dict(Experiment, [1])


def test_missing_required_top_level_key():
    with pytest.raises(ConfigError, match="^name: required key is missing$") as error:
        from_dict(Experiment, {})
    assert error.value.key == "name"


@pytest.mark.parametrize(("data", "message"), [
    ({"optim": {"lr": 0}}, "train.optim.lr: must be > 0, got 0.0"),
    ({"optim": {"lr": -1e-3}}, "train.optim.lr: must be > 0, got -0.001"),
    ({"optim": {"lr": math.nan}}, "train.optim.lr: must be > 0, got nan"),
    ({"optim": {"momentum": 1}}, "train.optim.momentum: must be in [0, 1), got 1.0"),
    ({"optim": {"momentum": -0.1}}, "train.optim.momentum: must be in [0, 1), got -0.1"),
    ({"optim": {"betas": [0.9, 1.5]}}, "train.optim.betas[1]: must be in [0, 1], got 1.5"),
    ({"steps": 0}, "train.steps: must be >= 1, got 0"),
    ({"weights": {"ce": -1}}, "train.weights.ce: must be >= 0, got -1.0"),
])
def test_ranges(data, message):
    assert config_error({"train": data}) == message


def test_range_bounds_are_inclusive_unless_open():
    cfg = build(train={"steps": 1, "optim": {"momentum": 0, "betas": [0, 1]}}, aug={"kind": "x", "strength": 1})
    assert cfg.train.steps == 1 and cfg.train.optim.betas == (0.0, 1.0) and cfg.aug.strength == 1
    assert config_error({"aug": {"kind": "x", "strength": 1.01}}) == "aug.strength: must be <= 1, got 1.01"


def test_validate_hook_gets_the_dotted_prefix():
    assert config_error({"train": {"steps": 10, "milestones": [5, 20]}}) == \
        "train.milestones: must not exceed steps (10)"
    assert config_error({"train": {"amp": True, "optim": {"momentum": 0.5}}}) == \
        "train: amp with sgd at momentum 0.5 is not supported"


def test_check_config_on_a_configuration_built_in_code():
    check_config(Experiment(name="x"))
    with pytest.raises(ConfigError, match="^train.optim.lr: must be > 0"):
        check_config(Experiment(name="x", train=Train(optim=Optim(lr=-1))))


def test_unsupported_annotation_is_a_schema_bug_not_a_config_error():
    @dataclass
    class Bad:
        value: complex = 0j

    with pytest.raises(TypeError, match="value: unsupported type annotation"):
        from_dict(Bad, {"value": 1})


# ---- to_dict


def test_to_dict_gives_plain_types_that_round_trip():
    cfg = build(train={"optim": {"lr": 0.1}, "milestones": [10], "weights": {"ce": 0.5}}, aug={"kind": "x"},
                notes={"free": ["form"]})
    data = to_dict(cfg)
    assert data["sizes"] == [64, 64] and data["train"]["out"] == "runs" and data["aug"] == {"kind": "x",
                                                                                           "strength": 0.5}
    assert from_dict(Experiment, data) == cfg
    assert yaml.safe_load(yaml.safe_dump(data)) == data
    buffer = io.BytesIO()
    torch.save(data, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == data


# ---- YAML


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_yaml_reads_yaml_12_numbers_and_booleans(tmp_path):
    path = write(tmp_path, "train:\n  optim: {lr: 1e-3, momentum: .5}\n  steps: 2e3\nmode: off\nflag: true\n")
    assert load_yaml(path) == {"train": {"optim": {"lr": 1e-3, "momentum": 0.5}, "steps": 2000.0}, "mode": "off",
                               "flag": True}


def test_load_yaml_empty_file(tmp_path):
    assert load_yaml(write(tmp_path, "# only a comment\n")) == {}


@pytest.mark.parametrize(("text", "message"), [
    ("train:\n  steps: 3\n lr: [1\n", r"line 3, column 2: invalid YAML"),
    ("a: 1\nb: [1, 2\n", r"line 3, column 1: invalid YAML"),
    ("train:\n  steps: 1\n  steps: 2\n", r"line 3, column 3: invalid YAML: duplicate key 'steps'"),
    ("- 1\n- 2\n", r"expected a mapping of keys to values at the top level, got \[1, 2\]"),
    ("a: !!python/object/apply:os.system ['touch x']\n", r"line 1, column 4: invalid YAML: could not determine"),
    ("a: &x [*x]\n", r"line 1, column 8: invalid YAML: alias \*x is inside its own anchor"),
    ("when: 2001-02-30\n", r"invalid value: day is out of range"),
])
def test_load_yaml_errors_name_file_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError, match=message) as error:
        load_yaml(path)
    assert error.value.path == str(path)
    assert not (tmp_path / "x").exists()


def test_load_yaml_missing_folder_and_binary(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_yaml(tmp_path / "none.yaml")
    with pytest.raises(InputError, match="is a folder"):
        load_yaml(tmp_path)
    (tmp_path / "b.yaml").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(InputError, match="not a text file"):
        load_yaml(tmp_path / "b.yaml")


def test_merge_keys_and_anchors_still_work(tmp_path):
    path = write(tmp_path, "base: &b {lr: 0.1, name: sgd}\nfinetune:\n  <<: *b\n  lr: 0.01\n")
    assert load_yaml(path)["finetune"] == {"lr": 0.01, "name": "sgd"}


def test_dump_yaml_quotes_strings_that_look_like_other_types(tmp_path):
    data = {"a": "1e5", "b": "yes", "c": "true", "d": 1e-5, "e": "off", "f": [1, "2"], "g": None, "h": ".5"}
    text = dump_yaml(data)
    assert load_yaml(write(tmp_path, text)) == data
    assert yaml.safe_load(text) == data  # plain PyYAML reads it the same way


# ---- overrides


@pytest.mark.parametrize(("text", "expected"), [
    ("train.optim.lr=1e-3", ("train.optim.lr", 1e-3)),
    ("sizes=[1,2]", ("sizes", [1, 2])),
    ("name=hello world", ("name", "hello world")),
    ("train.amp=true", ("train.amp", True)),
    (" train.seed = null", ("train.seed", None)),
    ("a=", ("a", None)),
    ("a=b=c", ("a", "b=c")),
    ("train={steps: 3}", ("train", {"steps": 3})),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("train.lr", "^train.lr: an override needs the form key=value"),
    ("", "^an override needs the form key=value"),
    ("=3", "the key of an override is dotted names"),
    ("a..b=3", "the key of an override is dotted names"),
    ("a b=3", "the key of an override is dotted names"),
    ("sizes=[1,2", "^sizes: cannot read the value '\\[1,2' as YAML"),
])
def test_parse_override_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_override(text)


def test_apply_overrides_creates_merges_and_does_not_mutate():
    data = {"train": {"optim": {"lr": 0.1, "name": "sgd"}}, "aug": None}
    out = apply_overrides(data, ["train.optim.lr=0.5", "train.steps=3", "aug.kind=gmm",
                                 "train.optim={momentum: 0.9}", "train.steps=4"])
    assert out == {"train": {"optim": {"lr": 0.5, "name": "sgd", "momentum": 0.9}, "steps": 4},
                   "aug": {"kind": "gmm"}}
    assert data == {"train": {"optim": {"lr": 0.1, "name": "sgd"}}, "aug": None}


def test_apply_overrides_into_a_value_that_is_not_a_section():
    with pytest.raises(ConfigError, match="^train.steps: is 3, not a section, so train.steps.x cannot be set$"):
        apply_overrides({"train": {"steps": 3}}, ["train.steps.x=1"])


def test_load_config_precedence(tmp_path):
    path = write(tmp_path, "name: from_file\ntrain:\n  steps: 20\n  optim: {lr: 0.02}\n")
    base = {"name": "from_base", "train": {"steps": 10, "amp": True, "optim": {"momentum": 0.9}}}
    cfg = load_config(Experiment, path, ["train.steps=30"], base=base)
    assert cfg.name == "from_file"  # file > base
    assert cfg.train.steps == 30  # overrides > file
    assert cfg.train.amp is True and cfg.train.optim.momentum == 0.9  # base > defaults, merged key by key
    assert cfg.train.optim.lr == 0.02 and cfg.train.optim.name == "sgd"  # defaults fill the rest
    assert load_config(Experiment, overrides=["name=x"]) == Experiment(name="x")


def test_load_config_reports_unknown_override_keys():
    with pytest.raises(ConfigError, match=r"^train.stpes: unknown key \(did you mean 'steps'\?\)$"):
        load_config(Experiment, overrides=["name=x", "train.stpes=3"])


# ---- properties


def value_strategy(tp, metadata):
    """Valid values for the example schema's annotations, as plain data (what YAML would give)."""
    low, high = metadata.get("range", (None, None))
    if tp is int:
        return st.integers(min_value=low, max_value=high)
    if tp is float:
        open_side = metadata.get("open")
        return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=high is None and low is None,
                         exclude_min=open_side in ("low", "both"), exclude_max=open_side in ("high", "both"))
    if tp is bool:
        return st.booleans()
    if tp is str:
        return st.text(max_size=8)
    return None


def section(cls, required_only=False):
    """Random partial plain-data sections of a schema dataclass, from its fields."""
    optim = st.fixed_dictionaries({}, optional={
        "lr": value_strategy(float, {"range": (0, None), "open": "low"}),
        "momentum": value_strategy(float, {"range": (0, 1), "open": "high"}),
        "betas": st.lists(value_strategy(float, {"range": (0, 1)}), min_size=2, max_size=2),
        "name": st.sampled_from(["sgd", "adam"])})
    names = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=6)
    train = st.fixed_dictionaries({}, optional={
        "steps": st.integers(100, 10**6),
        "seed": st.none() | st.integers(),
        "optim": optim,
        "finetune": optim,
        "milestones": st.lists(st.integers(0, 100), max_size=3),  # <= default steps
        "weights": st.dictionaries(names, value_strategy(float, {"range": (0, None)}), max_size=3),
        "amp": st.booleans(),
        "out": names})
    aug = st.fixed_dictionaries({"kind": st.text(max_size=5)},
                                optional={"strength": value_strategy(float, {"range": (None, 1)})})
    return st.fixed_dictionaries({"name": st.text(max_size=10)}, optional={
        "train": train, "aug": st.none() | aug, "sizes": st.lists(st.integers(1, 512), max_size=3),
        "mode": st.integers() | st.text(max_size=5)})


junk_leaves = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
               | st.sampled_from(["steps", "optim", "lr", "sgd", "adam", "kind", "train"]))
junk = st.recursive(junk_leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["name", "train", "aug", "steps", "optim", "lr", "betas", "weights", "sizes", "stpes", "x"])
    | st.text(max_size=4) | st.integers(-2, 2) | st.none(), inner, max_size=4), max_leaves=12)


@settings(max_examples=40, deadline=None)
@given(section(Experiment))
def test_valid_data_round_trips(data):
    cfg = from_dict(Experiment, data)
    plain = to_dict(cfg)
    assert from_dict(Experiment, plain) == cfg
    assert from_dict(Experiment, yaml.safe_load(dump_yaml(plain))) == cfg
    assert to_dict(from_dict(Experiment, plain)) == plain


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(section(Experiment))
def test_valid_data_round_trips_through_a_yaml_file(tmp_path, data):
    cfg = from_dict(Experiment, data)
    path = write(tmp_path, dump_yaml(to_dict(cfg)))
    assert load_config(Experiment, path) == cfg


@settings(max_examples=100, deadline=None)
@given(junk)
def test_junk_data_raises_only_config_errors(data):
    try:
        cfg = from_dict(Experiment, data)
    except ConfigError as error:
        assert error.key is None or isinstance(error.key, str)
    else:
        assert from_dict(Experiment, to_dict(cfg)) == cfg


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=12) | st.sampled_from(["train.steps=", "train.optim=[", "a.b=c", "x=&a [*a]",
                                                      "train=3", "train.steps.x=1", "sizes={a: 1}"]),
                max_size=4))
def test_junk_overrides_raise_only_config_errors(overrides):
    try:
        load_config(Experiment, overrides=["name=x", *overrides])
    except ConfigError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(codec="utf-8"), max_size=40)
       | st.lists(st.sampled_from(["a:", " b", ": [", "]", "{", "}", "&x", "*x", "!!", "- ", "\n", "  ", "1e3",
                                   "name", "train", "steps", "?", ",", "'", '"', "#", "<<"]),
                  max_size=15).map("".join))
def test_junk_yaml_files_raise_only_input_or_config_errors(tmp_path, text):
    path = tmp_path / "junk.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(Experiment, path)
    except (InputError, ConfigError):
        pass


def test_interval_fields_need_an_ordered_pair():
    from dataclasses import dataclass, field

    from learn2synth.config import INTERVAL

    @dataclass
    class Ranges:
        span: list = field(default_factory=lambda: [0.0, 1.0], metadata={**INTERVAL, "range": (0, 1)})
        rows: list = field(default_factory=lambda: [[0, 1], [2, 2]], metadata=INTERVAL)

    assert from_dict(Ranges, {"span": [0.5, 0.5], "rows": [[1, 3]]}).rows == [[1, 3]]
    for data, message in [({"span": [0.8, 0.2]}, r"span: must be \[low, high\] with low <= high, got \[0.8, 0.2\]"),
                          ({"span": [0.1]}, r"span: must be \[low, high\]"),
                          ({"span": [0.2, 1.5]}, r"span\[1\]: must be in \[0, 1\]"),
                          ({"rows": [[0, 1], [3, 2]]}, r"rows\[1\]: must be \[low, high\]")]:
        with pytest.raises(ConfigError, match=message):
            from_dict(Ranges, data)


def test_synthesis_ranges_are_checked_when_the_config_is_read():
    from learn2synth.train_config import load_train_config

    for override in ["synth.partial_volume.fraction=[0.8,0.2]", "synth.noise.std=[0.1,0.05]",
                     "synth.strip.margin=[3,1]", "synth.gmm.mean=[0.9,0.1]"]:
        with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
            load_train_config(None, [override])
