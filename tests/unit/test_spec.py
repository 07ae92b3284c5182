"""Stage specs: every fact about a stage's interface written once (``components/<stage>/
component.py``'s ``SPEC``) and everything else derived from it: the CLI, the KFP component,
the pipeline's parameters and the README tables (and a fresh check that fails on drift)."""

from __future__ import annotations

import dataclasses
import datetime
import importlib

import pytest

from components.contracts import cli
from components.contracts.spec import Io, Param, StageSpec, with_table
from pipelines import pipeline as P
from pipelines.components import STAGES, stage_spec

SPECS = {s.module: stage_spec(s) for s in STAGES}


def _component_inputs(spec: StageSpec):
    comp = spec.component("registry.example/x:1")
    return comp.component_spec.inputs or {}, comp.component_spec.outputs or {}


@pytest.mark.parametrize("module", sorted(SPECS))
def test_cli_and_component_carry_the_spec_defaults(module):
    spec = SPECS[module]
    required = [
        arg
        for direction, ios in (("in", spec.inputs), ("out", spec.outputs))
        for io in ios
        if io.required
        for arg in (f"--{direction}-{io.name.replace('_', '-')}", "x")
    ]
    args = vars(cli.build_parser(spec).parse_args(required))
    inputs, outputs = _component_inputs(spec)
    for p in spec.params:
        assert args[p.name] == p.default, p.name
        if p.kfp:
            assert inputs[p.name].default == p.default, p.name
            assert inputs[p.name].description == p.help
        else:
            assert p.name not in inputs
    assert set(outputs) == {io.name for io in spec.outputs}
    assert {n for n in inputs if n not in spec.defaults()} == {io.name for io in spec.inputs}


@pytest.mark.parametrize("module", sorted(SPECS))
def test_component_command_is_the_cli_with_every_flag(module):
    spec = SPECS[module]
    container = spec.component("img:1").component_spec.implementation.container
    assert container.command == ["python", "-m", f"components.{module}"]
    flags = [a for a in container.args if isinstance(a, str) and a.startswith("--")]
    parser = cli.build_parser(spec)
    known = {opt for action in parser._actions for opt in action.option_strings}
    assert set(flags) <= known
    assert ("--executor-input" in flags) == spec.executor_input


def test_stage_clis_read_their_spec():
    """The stage CLIs parse with the spec: a changed default changes the CLI."""
    main = importlib.import_module("components.datagen.__main__")
    assert (
        main.parse_args(["--out-transactions", "x"]).rows == SPECS["datagen"].param("rows").default
    )
    xgb = importlib.import_module("components.train_xgb.__main__")
    parsed = xgb.build_parser().parse_args(["--in-features", "f", "--out-model", "m"])
    assert parsed.loto_rounds == 80 and parsed.nthread == 0


def test_logic_defaults_are_the_source():
    from components.datagen.logic import DatagenParams
    from components.train_iforest.logic import IForestParams
    from components.train_xgb.logic import XgbParams

    assert SPECS["datagen"].param("rows").default == DatagenParams().rows
    assert SPECS["datagen"].param("start_date").default == DatagenParams().start_date.isoformat()
    assert SPECS["train_xgb"].param("n_estimators").default == XgbParams().n_estimators
    assert SPECS["train_iforest"].param("max_samples").default == IForestParams().max_samples


def test_pipeline_parameters_come_from_the_specs():
    params = P.pipeline_params()
    assert params["rows"] == [("datagen", SPECS["datagen"].param("rows"))]
    assert params["xgb_n_estimators"][0][1] is SPECS["train_xgb"].param("n_estimators")
    assert params["iforest_n_estimators"][0][1] is SPECS["train_iforest"].param("n_estimators")
    assert [m for m, _ in params["seed"]] == ["datagen", "train_xgb", "train_iforest"]
    assert "xgb_nthread" not in params and "nthread" not in params  # CLI-only
    pipe = P.build_pipeline("registry.example", "t1", images={})
    inputs = pipe.component_spec.inputs
    assert list(inputs) == list(params)
    for name, targets in params.items():
        assert inputs[name].default == targets[0][1].default, name


def test_pipeline_refuses_a_shared_parameter_with_two_defaults(monkeypatch):
    real = P.stage_spec

    def patched(stage):
        spec = real(stage)
        if stage.module != "train_iforest":
            return spec
        params = tuple(
            Param("seed", int, 7, p.help) if p.name == "seed" else p for p in spec.params
        )
        return StageSpec(spec.module, spec.summary, spec.inputs, spec.outputs, params)

    monkeypatch.setattr(P, "stage_spec", patched)
    with pytest.raises(ValueError, match="pipeline parameter seed"):
        P.pipeline_params()


def test_max_regression_says_what_the_gate_does():
    """max_regression: the recall drop tolerated beyond the noise on the same test rows; the
    fallback (no scorable champion) applies it to PR-AUC and recall alike."""
    from components.register.logic import gate

    help_text = SPECS["register"].param("max_regression").help
    assert "same test rows" in help_text and "95% interval" in help_text
    assert "PR-AUC and recall" in help_text
    champion = {"blend_pr_auc": 0.80, "blend_recall_at_1pct_fpr": 0.80}
    candidate = {"blend_pr_auc": 0.80, "blend_recall_at_1pct_fpr": 0.70}
    decision = gate(
        candidate,
        champion,
        min_pr_auc=0.5,
        min_recall_at_1pct_fpr=0.6,
        max_regression=0.02,
    )
    assert not decision.passed


def test_readme_tables_are_fresh():
    from pipelines.compile import fresh_readmes

    stale = [str(path) for path, old, new in fresh_readmes() if old != new]
    assert not stale, f"stale README parameter tables (run `make compile`): {stale}"


def test_stale_readme_table_is_detected(tmp_path):
    from pipelines.compile import fresh_readmes

    for path, _, fresh in fresh_readmes():
        (tmp_path / path.parent.name).mkdir()
        stale = fresh.replace("| `200000` |", "| `100` |")
        (tmp_path / path.parent.name / "README.md").write_text(stale)
    stale = [p.parent.name for p, old, new in fresh_readmes(tmp_path) if old != new]
    assert stale == ["datagen"]


def test_readme_without_markers_is_an_error():
    with pytest.raises(ValueError, match="parameters"):
        with_table("# stage\nno table here\n", "| t |")


def test_readme_table_lists_every_parameter_and_its_pipeline_name():
    table = SPECS["train_xgb"].readme_table({"n_estimators": "xgb_n_estimators"})
    for p in SPECS["train_xgb"].params:
        assert f"`{p.flag}`" in table
    assert "| `--n-estimators` | `xgb_n_estimators` | `400` |" in table
    assert "| `--nthread` | - (CLI only) | `0` |" in table
    assert SPECS["features"].readme_table() == "This stage has no parameters."


def test_readmes_name_the_pipeline_parameters():
    from pipelines.compile import fresh_readmes

    text = {path.parent.name: new for path, _, new in fresh_readmes()}
    assert "| `--n-estimators` | `iforest_n_estimators` | `200` |" in text["train_iforest"]
    assert "| `--seed` | `seed` | `42` |" in text["train_xgb"]


def test_bool_parameter_parses_like_kfp_renders_it(capsys):
    spec = StageSpec("demo", "Demo.", params=(Param("strict", bool, False, "Be strict."),))
    parser = cli.build_parser(spec)
    assert parser.parse_args([]).strict is False
    assert parser.parse_args(["--strict"]).strict is True
    assert parser.parse_args(["--strict", "false"]).strict is False
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--strict", "maybe"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "demo: error: argument --strict: expected true or false, got 'maybe'"
    ]


def test_bad_choice_is_one_line(capsys):
    spec = StageSpec(
        "demo", "Demo.", params=(Param("kind", str, "a", "Kind.", choices=("a", "b")),)
    )
    with pytest.raises(SystemExit):
        cli.build_parser(spec).parse_args(["--kind", "nope"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("demo: error: argument --kind")


def test_spec_rejects_what_kfp_cannot_type():
    with pytest.raises(TypeError):
        Param("x", list, [], "no lists")
    with pytest.raises(TypeError):
        Param("x", int, None, "a component parameter needs a default")
    with pytest.raises(TypeError):
        Io("x", "Parquet", "not a KFP artifact type")


def test_run_summary_headline_comes_from_the_evaluate_spec():
    from pipelines.runner import summary

    assert summary.HEADLINE_TASK == "evaluate"
    assert SPECS["evaluate"].headline == summary.HEADLINE_KEYS
    assert summary.DECISION_TASK == "register"


@pytest.mark.parametrize("module", sorted(SPECS))
def test_stage_code_never_imports_component_py(module):
    """component.py is not in the stage image (.dockerignore: it would feed the content tag
    that component.yaml names), so the CLI and the spec must not import it."""
    import ast
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "components" / module
    for path in folder.glob("*.py"):
        if path.name == "component.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.endswith(f"{module}.component"), path
            if isinstance(node, ast.Import):
                assert all(not a.name.endswith(f"{module}.component") for a in node.names), path


@dataclasses.dataclass
class Knobs:
    size: int = 3
    start: datetime.date = datetime.date(2026, 2, 1)
    weight: float | None = None
    threads: int = dataclasses.field(default_factory=lambda: 2)


def test_params_from_takes_name_type_and_default_from_the_logic_dataclass():
    from components.contracts.spec import params_from

    size, start = params_from(Knobs, {"size": "How many.", "start": "First day."})
    assert (size.name, size.type, size.default, size.help) == ("size", int, 3, "How many.")
    assert (start.type, start.default) == (str, "2026-02-01")
    (weight,) = params_from(Knobs, {"weight": "Optional."}, kfp=False)
    assert (weight.type, weight.default, weight.kfp) == (float, None, False)
    with pytest.raises(TypeError, match="threads"):
        params_from(Knobs, {"threads": "No plain default."})
