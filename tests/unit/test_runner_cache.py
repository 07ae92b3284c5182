"""Local runner: the content-addressed cache key changes exactly when it should."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kfp import compiler, dsl

import components
from components.contracts import storage
from pipelines.runner import cache, ir

BASE = {"component": "c" * 64, "code": "d" * 64, "parameters": {"n": 1, "tag": "a"},
        "input_digests": {"src": "e" * 64},
        "environment": {"mlflow.tracking_uri": "sqlite:///a.db", "s3.endpoint_url": None}}  # fmt: skip


def key(**changes):
    args = {**BASE, **changes}
    return cache.cache_key(
        args["component"],
        args["code"],
        args["parameters"],
        args["input_digests"],
        args["environment"],
    )


def test_key_is_stable_and_ignores_dict_order():
    assert key() == key(parameters={"tag": "a", "n": 1})


@pytest.mark.parametrize(
    "change",
    [
        {"parameters": {"n": 2, "tag": "a"}},
        {"parameters": {"n": 1, "tag": "b"}},
        {"parameters": {"n": 1}},
        {"input_digests": {"src": "f" * 64}},
        {"input_digests": {"other": "e" * 64}},
        {"component": "0" * 64},
        {"code": "1" * 64},
        {"environment": {"mlflow.tracking_uri": "http://other:5000", "s3.endpoint_url": None}},
        {"environment": {"mlflow.tracking_uri": "sqlite:///a.db", "s3.endpoint_url": "http://x"}},
        {"environment": {}},
    ],
)
def test_key_changes_with_each_ingredient(change):
    assert key(**change) != key()


def test_int_and_float_parameters_are_distinct():
    assert key(parameters={"n": 1, "tag": "a"}) != key(parameters={"n": 1.5, "tag": "a"})


def test_file_digest_changes_with_one_byte(tmp_path):
    f = tmp_path / "data.bin"
    f.write_bytes(b"\x00" * 1000)
    before = storage.digest_path(f)
    f.write_bytes(b"\x00" * 999 + b"\x01")
    assert storage.digest_path(f) != before


def test_folder_digest_depends_on_contents_and_names_not_location(tmp_path):
    for root in ("x", "y"):
        (tmp_path / root / "date=2026-01-01").mkdir(parents=True)
        (tmp_path / root / "date=2026-01-01" / "part-0.parquet").write_bytes(b"abc")
        (tmp_path / root / "_SUCCESS").write_bytes(b"{}")
    assert storage.digest_path(tmp_path / "x") == storage.digest_path(tmp_path / "y")
    (tmp_path / "y" / "date=2026-01-01" / "part-0.parquet").write_bytes(b"abd")
    assert storage.digest_path(tmp_path / "x") != storage.digest_path(tmp_path / "y")
    (tmp_path / "y" / "date=2026-01-01" / "part-0.parquet").rename(
        tmp_path / "y" / "date=2026-01-01" / "part-1.parquet"
    )
    assert storage.digest_path(tmp_path / "x") != storage.digest_path(tmp_path / "y")


@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=8), st.text(max_size=8)),
        max_size=6,
        unique_by=lambda e: e[0],
    )
)
def test_folder_digest_is_order_independent(entries):
    assert storage.folder_digest(entries) == storage.folder_digest(list(reversed(entries)))


def test_missing_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        storage.digest_path(tmp_path / "nope")


def _compile_digest(tmp_path, command_arg: str, image: str) -> str:
    @dsl.container_component
    def comp(out: dsl.Output[dsl.Dataset], n: int = 1):
        return dsl.ContainerSpec(
            image=image, command=["python", "-c", command_arg], args=[out.path, n]
        )

    @dsl.pipeline(name="p")
    def pipe():
        comp()

    path = tmp_path / f"{abs(hash((command_arg, image)))}.yaml"
    compiler.Compiler().compile(pipe, str(path))
    task = ir.build_dag(*ir.load_pipeline(path)).tasks["comp"]
    return cache.component_digest(task.component_spec, task.container)


def test_component_digest_tracks_the_command_but_not_the_image(tmp_path):
    base = _compile_digest(tmp_path, "pass", "img:1")
    assert _compile_digest(tmp_path, "pass", "img:2") == base
    assert _compile_digest(tmp_path, "print(1)", "img:1") != base


def test_code_digest_covers_the_stage_package_and_contracts():
    digest = cache.code_digest(["python", "-m", "components.train_xgb", "--x"])
    assert len(digest) == 64
    assert digest != cache.code_digest(["python", "-m", "components.train_iforest"])
    assert cache.code_digest(["python", "-c", "pass"]) == ""


def test_cache_store_round_trip_and_validation(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("hello")
    store = cache.CacheStore(str(tmp_path / "root"))
    entry = {"outputs": {"out": {"uri": str(out), "digest": storage.digest_path(out)}}}
    assert store.get("ab" * 32) is None
    store.put("ab" * 32, entry)
    got = store.get("ab" * 32)
    assert got["outputs"] == entry["outputs"]
    assert store.outputs_valid(got)
    out.write_text("tampered")
    assert not store.outputs_valid(got)
    out.unlink()
    assert not store.outputs_valid(got)


def test_code_digest_counts_only_the_contracts_a_stage_imports():
    files = cache._contracts_closure(cache._source_files("components.datagen"))
    used = {p.relative_to(Path(components.__file__).parent).as_posix() for p in files}
    assert {"contracts/storage/publication.py", "contracts/schemas.py"} <= used
    assert "contracts/process.py" in used  # imported by the storage package, transitively
    assert "contracts/blend.py" not in used  # editing the blend must not bust datagen's cache


def test_only_stages_that_talk_to_mlflow_depend_on_settings():
    def uses(stage):
        return cache.uses_settings(["python", "-m", f"components.{stage}"])

    assert not any(uses(s) for s in ("datagen", "split", "features"))
    assert all(uses(s) for s in ("train_xgb", "train_iforest", "evaluate", "register"))
    # code the runner cannot read is assumed to depend on them
    assert cache.uses_settings(["python", "-c", "import os"])
    assert cache.uses_settings(["sh", "-c", "true"])


def test_imports_mlflow_sees_nested_and_from_imports(tmp_path):
    for body, expected in [
        ("def f():\n    import mlflow.pyfunc\n", True),
        ("from mlflow import MlflowClient\n", True),
        ("import mlflowish\nfrom . import x\n", False),
    ]:
        f = tmp_path / "m.py"
        f.write_text(body)
        assert cache._imports_mlflow(f) is expected
