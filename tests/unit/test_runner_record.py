"""Local runner: run records survive a save/load round trip and list newest first."""

import pytest

from pipelines.runner import record
from pipelines.runner.record import RunRecord, TaskRecord
from pipelines.runner.summary import headline_metrics, run_summary, runs_table, show


def _record(
    run_id="toy-20260101-000000-abcd", started="2026-01-01T00:00:00.000+00:00"
) -> RunRecord:
    return RunRecord(
        run_id=run_id, pipeline_name="toy", pipeline_file="/p.yaml", pipeline_sha256="0" * 64,
        pipeline_root="/root", parameters={"rows": 10, "rate": 0.5}, started_at=started,
        status=record.RUN_SUCCEEDED, duration_s=3.5,
        tasks={
            "datagen": TaskRecord(name="datagen", status=record.SUCCEEDED, cache="hit", attempts=0,
                                  outputs={"transactions": {"uri": "/root/x", "digest": "a" * 64, "type": "system.Dataset", "metadata": {}}}),
            "evaluate": TaskRecord(name="evaluate", status=record.SUCCEEDED, cache="miss", attempts=2, duration_s=1.25,
                                   inputs={"features": {"uri": "/root/f", "digest": "b" * 64, "producer": "features"}},
                                   outputs={"metrics": {"uri": "/root/m", "digest": "c" * 64, "type": "system.Metrics",
                                                        "metadata": {"pr_auc": 0.875, "label": "x", "flag": True}}}),
        },
    )  # fmt: skip


def test_round_trip(tmp_path):
    rec = _record()
    record.save(rec, tmp_path)
    loaded = record.load(tmp_path, rec.run_id)
    assert loaded == rec
    assert record.load(tmp_path, rec.run_id[:-2]) == rec  # unique prefix


def test_load_unknown_run_names_the_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        record.load(tmp_path, "nope")


def test_list_runs_newest_first_and_skips_garbage(tmp_path):
    record.save(_record("toy-a", "2026-01-01T00:00:00"), tmp_path)
    record.save(_record("toy-b", "2026-01-02T00:00:00"), tmp_path)
    (record.runs_dir(tmp_path) / "junk.json").write_text("{}")
    assert [r.run_id for r in record.list_runs(tmp_path)] == ["toy-b", "toy-a"]


def test_summaries_show_cache_metrics_and_lineage(tmp_path):
    from components.contracts.settings import Settings

    rec = _record()
    assert headline_metrics(rec) == {"pr_auc": 0.875}
    rec.tasks["evaluate"].outputs["metrics"]["metadata"].update(blend_pr_auc=0.9, a_first=1.0)
    assert list(headline_metrics(rec, limit=2)) == ["blend_pr_auc", "a_first"]
    text = run_summary(rec, Settings.from_env())
    assert "cache hits: 1/2" in text and "pr_auc" in text and "make serve" in text
    assert rec.run_id in runs_table([rec])
    detail = show(rec)
    assert "out metrics" in detail and "cccccccccccc" in detail and "in  features" in detail


def _with_register(tmp_path, cache: str) -> RunRecord:
    from components.contracts import storage

    decision = tmp_path / "decision.json"
    storage.write_json(
        {"model_name": "m", "model_version": "3", "alias": "champion", "alias_moved": True,
         "champion_after": "3", "passed": True, "reason": "ok"},
        str(decision),
    )  # fmt: skip
    rec = _record()
    rec.tasks["register"] = TaskRecord(
        name="register", status=record.SUCCEEDED, cache=cache,
        cached_from="toy-older" if cache == "hit" else "",
        outputs={"decision": {"uri": str(decision), "digest": "d" * 64, "type": "system.Artifact", "metadata": {}}},
    )  # fmt: skip
    return rec


@pytest.mark.parametrize("cache", ["miss", "off", "disabled"])
def test_summary_reports_the_registration_this_run_made(tmp_path, cache):
    from components.contracts.settings import Settings

    text = run_summary(_with_register(tmp_path, cache), Settings.from_env())
    assert "model m version 3" in text and "alias champion moved" in text
    assert ("caching off in the pipeline" in text) is (cache == "off")


def test_summary_never_claims_a_cached_registration(tmp_path):
    from components.contracts.settings import Settings

    rec = _with_register(tmp_path, "hit")
    text = run_summary(rec, Settings.from_env())
    assert "moved" not in text and "version 3" not in text
    assert "nothing registered in this run" in text and "toy-older" in text
    assert "(from run toy-older)" in show(rec)
    rec.runner = {"pid": 41, "pgid": 40, "start": "9", "host": "h"}
    rec.resumes = [{"at": "T", "status": "running", "runner": "dead (pid 41)", "killed": {"register": [42, 43]},
                    "redo": ["register"]}]  # fmt: skip
    detail = show(rec)
    assert "runner    pid 41 (group 40) on h" in detail
    assert (
        "previous runner dead (pid 41) (status running); "
        "killed leftover task process groups: register (pids 42 43); to redo: register"
    ) in detail


def test_old_records_without_process_fields_still_load(tmp_path):
    rec = _record()
    data = rec.to_dict()
    for key in ("runner", "resumes"):
        data.pop(key)
    for task in data["tasks"].values():
        task.pop("process")
        task.pop("cached_from")
    assert RunRecord.from_dict(data) == rec


def test_headline_lines_put_each_interval_beside_its_metric():
    from pipelines.runner.summary import metric_lines

    lines = metric_lines(
        {"blend_recall_at_1pct_fpr": 0.8, "blend_recall_at_1pct_fpr_ci_low": 0.7,
         "blend_recall_at_1pct_fpr_ci_high": 0.9, "test_rows": 10.0}
    )  # fmt: skip
    assert len(lines) == 2
    assert lines[0].split() == ["blend_recall_at_1pct_fpr", "0.8000", "[0.7000,", "0.9000]", "95%"]
    assert lines[1].split() == ["test_rows", "10.0000"]
