"""`agents-pipelines eval` skips a dataset line that can never be a fair case, with its reason,
and goes on with the others (issue 20 item 11): an `expected` value its field can never hold
(outside the field's `choices`), and a line that is not UTF-8."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents_pipelines.cli import main
from conftest import write

CHOOSE = """\
schema_version: "1"
flow: {name: triage}
state:
  fields:
    topic: {type: str, required: true}
    category: {type: str, choices: [billing, bug]}
nodes:
  - id: classify
    prompt: "Classify this ticket: {topic}"
    outputs: [category]
edges:
  - {from: START, to: classify}
  - {from: classify, to: END}
"""


def test_a_line_that_cannot_be_a_fair_case_is_skipped_with_its_reason(
    simulated: None, mlflow_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workflow = write(tmp_path, CHOOSE)
    lines = [
        json.dumps({"topic": "charged twice", "expected": {"category": "billing"}}).encode(),
        json.dumps({"topic": "which queue?", "expected": {"category": "urgent"}}).encode(),
        '{"topic": "caf\u00e9 crashes"}'.encode("latin-1"),  # é as one byte: not UTF-8
        json.dumps({"topic": "blank screen", "expected": {"category": "bug"}}).encode(),
    ]
    dataset = tmp_path / "cases.jsonl"
    dataset.write_bytes(b"\n".join(lines) + b"\n")

    assert main(["eval", str(workflow), "--dataset", str(dataset)]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Evaluation of triage over {dataset}: 4 line(s), 2 case(s), 2 skipped"
    assert [line for line in out if line.startswith("  skipped:")] == [
        "  skipped: line 2: \"expected.category\" must be str: Input should be 'billing' or "
        "'bug' (got 'urgent'), which the field can never hold",
        "  skipped: line 3: not UTF-8: byte 0xe9 at column 15",
    ]
    # The two fair cases ran, and each got its verdict on expected.category.
    (verdicts,) = [line.split() for line in out if line.startswith("  expected.category")]
    assert verdicts[2] == "2"


def test_mlflow_holds_one_chunk_of_rows_at_a_time_and_the_run_covers_them_all(
    simulated: None,
    mlflow_uri: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """mlflow.genai.evaluate keeps every row's trace until it returns (88 KB a row: 1.23 GB
    at 10,000 lines): it is given a chunk of rows at a time, so what it holds does not grow
    with the dataset, and the one evaluation run still holds every case."""
    import mlflow
    import mlflow.genai

    from agents_pipelines.tracking import dataset_evaluation

    monkeypatch.setattr(dataset_evaluation, "CHUNK_ROWS", 2)
    handed: list[int] = []
    evaluate = mlflow.genai.evaluate

    def counted(*, data: list[object], **kwargs: object) -> object:
        handed.append(len(data))
        return evaluate(data=data, **kwargs)

    monkeypatch.setattr(mlflow.genai, "evaluate", counted)
    workflow = write(tmp_path, CHOOSE)
    topics = ["charged twice", "blank screen", "refund"]
    lines = [json.dumps({"topic": t, "expected": {"category": "bug"}}) for t in topics]
    dataset = write(tmp_path, "\n".join(lines) + "\n", "cases.jsonl")

    assert main(["eval", str(workflow), "--dataset", str(dataset)]) == 0

    assert handed == [2, 1]
    out = capsys.readouterr().out.splitlines()
    (verdicts,) = [line.split() for line in out if line.startswith("  expected.category")]
    passed, given = int(verdicts[1]), int(verdicts[2])
    assert given == 3
    (run,) = mlflow.MlflowClient().search_runs(
        ["1"], filter_string="tags.`mlflow.runType` = 'genai_evaluate'"
    )
    assert run.data.metrics["cases"] == 3
    assert run.data.metrics["expected.category/mean"] == round(passed / 3, 6)
    traces = mlflow.search_traces(locations=["1"], run_id=run.info.run_id, return_type="list")
    assert len(traces) == 3  # every chunk's rows, one evaluation view


def test_the_report_keeps_each_cases_scores_and_lets_its_final_state_go(
    simulated: None, mlflow_uri: str, tmp_path: Path
) -> None:
    """A case's final state (a state may hold a whole document) and its verdicts are what
    its scorers read: once they have scored it, the report keeps only its figures and
    scores, so what it holds per line is small and does not grow with the state."""
    from agents_pipelines.dataset_eval import evaluate_dataset, read_dataset
    from agents_pipelines.dataset_eval.report import render_report
    from agents_pipelines.spec import load_workflow

    workflow = load_workflow(write(tmp_path, CHOOSE))
    long = "x" * 20_000
    lines = [json.dumps({"topic": f"{t} {long}", "expected": {"category": "bug"}}) for t in "ab"]
    dataset = read_dataset(write(tmp_path, "\n".join(lines) + "\n", "cases.jsonl"), workflow)

    report = evaluate_dataset(workflow, dataset, concurrency=2, params={})

    assert [(r.state, r.verdicts) for r in report.results] == [(None, ())] * 2
    assert all(r.error is None and r.tokens > 0 for r in report.results)
    assert [[s.name for s in r.scores] for r in report.results] == [["expected.category"]] * 2
    rows = render_report(report).splitlines()
    (row,) = [line for line in rows if line.startswith("  expected.category")]
    assert row.split()[2] == "2"  # both cases scored, from the scores kept
