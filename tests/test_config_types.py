"""Typed config (study.schema): a value of the wrong type stops before anything runs, in one line
naming the key, the value given and what is expected; every preset as written still passes."""

import copy
import dataclasses
import inspect
import re
from fnmatch import fnmatchcase

import pytest
from helpers.commands import ROOT, run_main
from omegaconf import DictConfig, OmegaConf

from study import activations, config, models, newton, optimizers, schema, verdicts
from study.errors import ConfigError

PRESETS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
# A wrong value of each kind, as Hydra hands them over from the command line (`abc`, `2.5`,
# `true`, `[1]`, `{a: 1}`): a string for numbers, a number for strings, a list for scalars, ...
WRONG = {
    "int": ["abc", 2.5, True, [1]],
    "float": ["abc", True, [1]],
    "bool": ["abc", 1, [1]],
    "str": [7, 2.5, True, [1]],
    "list": ["abc", 7, {"a": 1}],
    "mapping": ["abc", 7, [1]],
}


def nodes(cfg: DictConfig, prefix: str = ""):
    """(dotted key, is a leaf) of every node, as written (interpolations unresolved)."""
    for k in cfg:
        child = None if OmegaConf.is_interpolation(cfg, k) else cfg[k]
        inner = isinstance(child, DictConfig) and len(child) > 0
        yield f"{prefix}{k}", not inner
        if inner:
            yield from nodes(child, f"{prefix}{k}.")


def refused(cfg: DictConfig) -> str:
    with pytest.raises(ConfigError) as err:
        config.check(cfg)
    return str(err.value)


WRONG_ON_THE_COMMAND_LINE = [
    ("model.depth=abc", "model.depth='abc' must be an integer >= 1 (got str)"),
    ("model.depth=2.5", "model.depth=2.5 must be an integer >= 1 (got float)"),
    ("model.depth=true", "model.depth=True must be an integer >= 1 (got bool)"),  # a bool is no integer
    ("train.epochs=1.5", "train.epochs=1.5 must be an integer >= 0 (got float)"),
    ("data.val_fraction=abc", "data.val_fraction='abc' must be a finite number in [0, 1) (got str)"),
    ("optimizer.learning_rate=fast", "optimizer.learning_rate='fast' must be a finite number > 0 (got str)"),
    ("diagnostics.small_grad_threshold=[1]", "small_grad_threshold=[1] must be a finite number >= 0 (got list)"),
    ("seed=x", "seed='x' must be an integer from 0 to 4294967295 (got str)"),
    ("train.batch_size=half", "train.batch_size='half' must be an integer >= 1 or 'full' (got str)"),
    ("diagnostics.log_every_n_steps=often", "log_every_n_steps='often' must be an integer >= 1 or 'auto'"),
    ("train.threads=many", "train.threads='many' must be an integer >= 0, 'auto' or null (got str)"),
    ("train.verbose=3", "train.verbose=3 must be an integer from 0 to 2 or 'auto'"),
    ("optimizer.clipnorm=big", "optimizer.clipnorm='big' must be a finite number > 0 or null (got str)"),
    ("data.train_subset=1.5", "data.train_subset=1.5 must be an integer >= 1 or null (got float)"),
    ("model.head_units=[64,x]", "model.head_units=[64, 'x'] must be a list of integers >= 1 or null (item 1: 'x')"),
    ("tracking.experiment=7", "tracking.experiment=7 must be a string (got int)"),
    ("data.options=null", "data.options=None must be a mapping (got null)"),  # null only where accepted
    ("tracking.cell_figures=yes", "tracking.cell_figures='yes' must be true or false (got str)"),
    ("optimizer=newton optimizer.params.cg_tol=tight", "optimizer.params.cg_tol='tight' must be a finite number"),
]


@pytest.mark.parametrize("override, said", WRONG_ON_THE_COMMAND_LINE, ids=[o for o, _ in WRONG_ON_THE_COMMAND_LINE])
def test_a_wrong_type_from_the_command_line_is_one_line_naming_key_value_and_expectation(make_cfg, override, said):
    """Values as Hydra parses them from the command line (compose's overrides)."""
    message = refused(make_cfg(*override.split()))
    assert said in message and "\n" not in message, message


@pytest.mark.parametrize(
    "overrides",
    [  # every union and nullable key, each line one config: its values as typed on a command line
        "train.batch_size=full diagnostics.log_every_n_steps=auto train.threads=auto train.verbose=auto "
        "optimizer.clipnorm=null data.train_subset=null diagnostics.curvature.examples=null "
        "diagnostics.histogram_epochs=null model.head_units=null tracking.artifact_location=null",
        "train.batch_size=1 diagnostics.log_every_n_steps=7 train.threads=null train.verbose=0 "
        "optimizer.clipnorm=1 optimizer.clipvalue=0.5 data.train_subset=100 data.test_subset=10 "
        "diagnostics.curvature.examples=64 diagnostics.histogram_epochs=[1,2] model.head_units=[8] "
        "tracking.artifact_location=/tmp/artifacts optimizer.learning_rate=1 experiment_name=mine question=why",
        "train.threads=2 train.verbose=2 optimizer.params=null model.activation_params=null "
        "diagnostics.verdict=null diagnostics.curvature=null train.callbacks=null",
    ],
    ids=["auto-full-null", "numbers-lists-strings", "threads-verbose-null-mappings"],
)
def test_every_value_a_union_or_a_nullable_key_accepts_passes(make_cfg, overrides):
    config.check(make_cfg(*overrides.split()))


def test_every_key_of_every_optimizer_refuses_a_wrong_type_naming_that_key(make_cfg):
    """Every node of the composed default config, with each optimizer (its own params), each
    schedule, the synthetic data's options and the presets' own tables (experiment=grid, the
    decision rules of edge_of_stability and he_2015_width, second_order's rate tables): a value of
    each wrong kind ends in a ConfigError naming that key and that value, and nothing else."""
    configs = [make_cfg(f"optimizer={name}", tiny=False) for name in optimizers.OPTIMIZERS]
    configs += [make_cfg(f"schedule={s}", tiny=False) for s in optimizers.SCHEDULES]
    configs += [
        make_cfg(),
        make_cfg("experiment=grid", "size=tiny"),
        make_cfg("experiment=edge_of_stability", "size=tiny"),
        make_cfg("experiment=he_2015_width", "size=tiny"),
        make_cfg("experiment=second_order", "size=tiny"),
        make_cfg("experiment=he_2015_fig2", "size=tiny"),
    ]
    walked = set()
    for cfg in configs:
        config.check(cfg)  # the defaults pass
        for key, leaf in nodes(cfg):
            spec = schema.spec(key)
            assert spec is not None or not leaf, f"{key} is set in conf/ but has no type in study.schema.SCHEMA"
            if spec is None or key in walked:
                continue
            walked.add(key)
            for wrong in WRONG[spec.kind]:
                bad = copy.deepcopy(cfg)
                OmegaConf.update(bad, key, wrong, merge=False)
                message = refused(bad)
                assert message.startswith(f"{key}={wrong!r} must be "), (key, wrong, message)
                assert "\n" not in message and spec.expected() in message, message
    assert [p for p in schema.SCHEMA if not any(fnmatchcase(k, p) for k in walked)] == []  # all the table walked


def test_a_wrong_value_is_named_where_it_is_set_not_where_it_is_interpolated(make_cfg):
    """experiment=grid: optimizer.lr_scale is the pilot's multiple for the cell's arm, optimizer and
    depth (tuned_lr_scale.<arm>.<optimizer>.d<depth>), else its depth-8 multiple, else 1 (an arm or
    optimizer the pilot did not tune runs at its default rate)."""
    assert refused(make_cfg("experiment=grid", "tuned_lr_scale.relu_he.adam.d8=fast")).startswith(
        "tuned_lr_scale.relu_he.adam.d8='fast' must be a finite number > 0 (got str)"
    )
    cell = lambda *o: make_cfg("experiment=grid", "arm=relu_he", "optimizer=sgd", *o).optimizer.lr_scale  # noqa: E731
    table = ("tuned_lr_scale.relu_he.sgd.d8=7", "tuned_lr_scale.relu_he.sgd.d16=0.5")
    assert (cell("model.depth=16", *table), cell("model.depth=8", *table), cell("model.depth=4", *table)) == (0.5, 7, 7)
    assert make_cfg("experiment=grid", "optimizer=lion").optimizer.lr_scale == 1
    assert refused(make_cfg("experiment=grid", "optimizer.lr_scale=${nowhere.x}")) == (
        "optimizer.lr_scale cannot be resolved: Interpolation key 'nowhere.x' not found"
    )


def test_the_schema_agrees_with_the_types_the_builders_declare():
    """ModelSpec's fields, each optimizer's and activation's parameters, Newton's arguments and the
    verdict thresholds: each has a spec of the kind of its default value."""
    kind = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "mapping"}
    model = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(models.ModelSpec)
    }
    newton_args = inspect.signature(newton.Newton).parameters
    declared = {
        **{f"model.{k}": v for k, v in model.items()},
        **{f"optimizer.params.{p}": newton_args[p].default for p in optimizers.PARAMS["newton"]},
        **{f"diagnostics.verdict.{f.name}": f.default for f in dataclasses.fields(verdicts.Thresholds)},
        **{f"model.activation_params.{a}.{p}": 1.0 for a, ps in activations.PARAMS.items() for p in ps},
    }
    for key, default in declared.items():
        if default is None:  # an optional key (model.pool_after): null accepted, a value typed
            assert schema.spec(key) is not None and schema.spec(key).problem(None) is None, key
            continue
        assert schema.spec(key) is not None and schema.spec(key).kind == kind[type(default)], key
        assert schema.spec(key).problem(default) is None, key
    for name, params in optimizers.PARAMS.items():
        assert all(schema.spec(f"optimizer.params.{p}") is not None for p in params), name


@pytest.mark.parametrize("size", ["tiny", "full"])
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_as_written_passes_and_sets_only_typed_keys(make_cfg, preset, size):
    cfg = make_cfg(f"experiment={preset}", f"size={size}", tiny=False)
    config.check(cfg)
    untyped = [k for k, leaf in nodes(cfg) if leaf and schema.spec(k) is None]
    assert untyped == [], f"experiment={preset} sets keys with no type in study.schema.SCHEMA: {untyped}"


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_every_value_of_every_preset_grid_passes_as_the_sweep_composes_its_cells(preset):
    """Each value of each axis of the preset's grid in at least one cell, the cells in turn at
    size=tiny and size=full, composed by Hydra's sweep loader from the preset's master config and
    checked, as the sweep callback does before the first cell trains."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from study.sweep import grid_cells

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        master = compose("config", [f"experiment={preset}"], return_hydra_config=True)
        cells, covered = [], set()
        for cell in grid_cells(master):
            if not set(cell) <= covered:
                cells.append(cell)
                covered |= set(cell)
        loader = GlobalHydra.instance().config_loader()
        for i, cell in enumerate(cells):
            size = ("tiny", "full")[i % 2]
            cfg = loader.load_sweep_config(master_config=master, sweep_overrides=[*cell, f"size={size}"])
            assert cfg.size == size
            config.check(cfg)
    axes = {f"{k}={v}" for k, values in master.hydra.sweeper.params.items() for v in str(values).split(",")}
    assert axes <= covered and len(cells) >= 2, axes - covered


def test_a_wrong_type_on_the_command_line_is_one_error_line_exit_2_and_no_store(tmp_path):
    proc = run_main(["model.depth=abc", f"tracking.uri=sqlite:///{tmp_path}/m.db"], tmp_path)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: model.depth='abc' must be an integer >= 1 (got str)"], proc.stderr[-2000:]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert not (tmp_path / "m.db").exists()


def test_one_cell_of_a_wrong_type_stops_the_sweep_before_any_cell_trains(tmp_path):
    """A multirun that fails fast (under a second: the sweep callback checks every cell first)."""
    proc = run_main(
        [
            "-m",
            "experiment=smoke",
            "size=tiny",
            "model.depth=2,abc",
            f"tracking.uri=sqlite:///{tmp_path}/m.db",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        tmp_path,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: model.depth='abc' must be an integer >= 1 (got str)"], proc.stderr[-2000:]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "start:" not in proc.stdout and "[sweep" not in proc.stdout
    assert not (tmp_path / "m.db").exists()  # stopped before the store was opened: no run, no parent run


def test_yaml_and_dataclass_defaults_agree_where_both_exist():
    """A default set twice must be the same: conf/model/cnn.yaml against models.ModelSpec (the
    chosen activation's `activation_params` is the spec's, the YAML holds them per activation), and
    conf/diagnostics/default.yaml's `verdict` against verdicts.Thresholds (the report's `--verdict`
    starts from these)."""
    import dataclasses

    import yaml

    def defaults(cls):
        return {
            f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(cls)
        }

    cnn = yaml.safe_load((ROOT / "conf" / "model" / "cnn.yaml").read_text())
    spec = defaults(models.ModelSpec)
    differ = {k: (v, spec[k]) for k, v in cnn.items() if k != "activation_params" and spec.get(k) != v}
    assert set(cnn) - {"activation_params"} <= set(spec) and not differ, differ
    verdict = yaml.safe_load((ROOT / "conf" / "diagnostics" / "default.yaml").read_text())["verdict"]
    assert verdict == defaults(verdicts.Thresholds)


def test_the_plan_reads_each_value_once_and_resolves_batch_size_and_learning_rate(make_cfg):
    from study.config import plan

    p = plan(make_cfg("train.batch_size=full", "optimizer=momentum", "optimizer.lr_scale=3", "schedule=step"))
    assert p.batch_size == p.n_train == 256 - round(0.1 * 256) and p.steps_per_epoch == 1  # TINY, 10 % validation
    assert p.optimizer.learning_rate == pytest.approx(0.03) and p.optimizer.params == {"momentum": 0.9}
    assert (p.schedule.name, p.schedule.decay_rate, p.schedule.decay_epochs) == ("step", 0.1, 2.0)
    assert p.diagnostics.thresholds == verdicts.Thresholds() and p.tracking.wait_s == 300
    assert p.data.train_size() == p.n_train
    with pytest.raises(ConfigError, match="train.batch_size=512 is larger than the training set"):
        plan(make_cfg("train.batch_size=512"))


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["schedule=step", "~schedule.decay_rate"], "schedule 'step' needs schedule.decay_rate"),
        (["+schedule.staircase=true"], "schedule.staircase is not a schedule key; valid: decay_rate, decay_epochs"),
        (["~diagnostics.curvature.top_k"], "diagnostics.curvature lacks top_k; its keys: every_n_steps, examples"),
        (["optimizer=momentum", "~optimizer.params.momentum"], "optimizer 'momentum' needs optimizer.params.momentum"),
    ],
)
def test_a_key_without_its_default_in_code_is_refused_before_training(make_cfg, overrides, words):
    """Defaults live only in conf/: a schedule, curvature block or momentum optimizer that lacks a key
    (or has one it does not know) is one ConfigError naming it, from the plan, before any training."""
    from study.config import plan

    with pytest.raises(ConfigError, match=re.escape(words)):
        plan(make_cfg(*overrides))
