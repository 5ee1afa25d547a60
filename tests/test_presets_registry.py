"""A preset is registered in one place: its YAML holds its question; report sections are registered
by name; a swept key the report does not know becomes a column of its own (fast, no sweep)."""

import yaml
from helpers.commands import ROOT

from study import contract
from study.report import collect, from_store, sections

PRESET_FILES = {p.stem: p for p in (ROOT / "conf" / "experiment").glob("*.yaml")}


def test_every_preset_yaml_asks_its_question_and_every_section_belongs_to_a_preset():
    for name, path in PRESET_FILES.items():
        cfg = yaml.safe_load(path.read_text())
        assert cfg["experiment_name"] == name
        assert isinstance(cfg.get("question"), str) and cfg["question"].endswith("?"), name
    assert set(sections.SECTIONS) == set(PRESET_FILES)  # every preset, each section's preset
    generic = sections.SECTIONS[sections.registry.GENERIC]
    assert [p for p, fn in sections.SECTIONS.items() if fn is generic] == ["grid", "smoke", "paper"]


def test_the_question_comes_from_the_parent_run_else_from_the_presets_yaml():
    he = yaml.safe_load(PRESET_FILES["he_2015"].read_text())["question"]
    assert sections.question({contract.PRESET: "he_2015"}) == he  # a sweep recorded before the tag
    assert sections.question({contract.PRESET: "he_2015", contract.QUESTION: "Why?"}) == "Why?"
    assert sections.question({contract.PRESET: "not-a-preset"}) is None


def test_a_second_section_for_one_preset_is_refused():
    try:
        sections.register("width")(lambda s, view: [])
    except ValueError as err:
        assert "'width' registered twice" in str(err)
    else:
        raise AssertionError("registered twice")


def test_a_swept_key_the_report_does_not_name_becomes_a_column_and_missing_cells_carry_it():
    planned = [
        {"model.depth": d, "data.train_subset": n, "optimizer": "adam", "+train.callbacks": "[]"}
        for d in ("2", "4")
        for n in ("512", "1024")
    ]
    extra = from_store._extra_axes(planned)
    assert extra == ["data.train_subset"]  # depth and optimizer are named axes; the rest do not vary
    ran = [{"model.depth": "2", "data.train_subset": n, "optimizer.name": "adam"} for n in ("512", "1024")]
    cells = collect.pd.DataFrame([{"depth": 2, "data.train_subset": p["data.train_subset"]} for p in ran])
    out = from_store._add_missing(planned, cells, ran, extra)
    missing = out[out["outcome"] == "missing"]
    assert sorted(missing["data.train_subset"]) == ["1024", "512"] and set(missing["depth"]) == {"4"}
    assert from_store._add_missing(None, cells, ran, extra) is cells  # no planned grid: nothing added
