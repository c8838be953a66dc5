"""`agents-pipelines eval`: a workflow over a JSON Lines dataset, scored, logged as one MLflow
evaluation run with a row (a trace with its assessments) per case, gated on the pass rate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents_pipelines.cli import main
from agents_pipelines.dataset_eval.dataset import read_dataset
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import Fault, GeminiLoopbackServer, RecordedRequest, Reply, Usage
from conftest import workflow_yaml, write

CLI = Path(sys.executable).parent / "agents-pipelines"  # the installed console script
CLASSIFY = workflow_yaml("triage", ("classify", "Classify this ticket: {topic}", "category"))
USAGE = Usage(prompt=30, candidates=2, thoughts=0, cached=0)
JUDGE_USAGE = Usage(prompt=40, candidates=12, thoughts=0, cached=0)
MALFORMED_LINE = 7


def model_answer(request: RecordedRequest) -> Reply:
    """The model calls a ticket about a charge billing, anything else a bug; slow enough
    that four cases are in flight at once."""
    answer = "billing" if "charge" in request.prompt_text else "bug"
    return Reply.text_reply(answer, usage=USAGE, delay_s=0.3)


def twenty_lines() -> tuple[str, int]:
    """19 cases and, on line 7, one that is not JSON. The model gets 15 of the 19 right:
    the 4 tickets about a refund are billing, and it calls them bugs."""
    lines: list[str] = []
    for number in range(1, 21):
        if number == MALFORMED_LINE:
            lines.append('{"topic": "a ticket cut short')
        elif number % 5 == 0:
            lines.append(case(f"Refund request {number}", "billing"))
        elif number % 2:
            lines.append(case(f"I was charged twice, order {number}", "billing"))
        else:
            lines.append(case(f"The app crashes on screen {number}", "bug"))
    return "\n".join(lines) + "\n", 15


def case(topic: str, category: str) -> str:
    return json.dumps({"topic": topic, "expected": {"category": category}})


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "eval", *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.slow
def test_eval_over_twenty_lines_gates_on_the_pass_rate_and_logs_an_evaluation_run(
    gemini: GeminiLoopbackServer,
    mlflow_uri: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import mlflow

    gemini.set_default(model_answer)
    workflow = write(tmp_path, CLASSIFY)
    text, right = twenty_lines()
    dataset = write(tmp_path, text, "cases.jsonl")

    below = run_cli(str(workflow), "--dataset", str(dataset), "--min-pass-rate", "0.8")

    assert below.returncode == 1, below.stderr
    out = below.stdout.splitlines()
    assert out[0] == f"Evaluation of triage over {dataset}: 20 line(s), 19 case(s), 1 skipped"
    assert "  expected.category                     15    19  78.9%" in out
    assert "  all (case pass rate)                  15    19  78.9%" in out
    assert f"  tokens: {19 * 32} total, 32 per case" in out
    assert f"  skipped: line {MALFORMED_LINE}: not JSON: Unterminated string" in below.stdout
    assert "  failed: line 5: expected.category: expected 'billing', got 'bug'" in out
    assert out[-1] == "pass rate 78.9% is below --min-pass-rate 80.0%: exit 1"
    # The cases ran four at once (--concurrency's default), as the server saw them.
    assert gemini.max_in_flight == 4
    assert len(gemini.requests) == 19

    client = mlflow.MlflowClient()
    (evaluation,) = client.search_runs(
        ["1"], filter_string="tags.`mlflow.runType` = 'genai_evaluate'"
    )
    metrics = evaluation.data.metrics
    assert metrics["pass_rate"] == round(right / 19, 6)
    assert (metrics["cases"], metrics["skipped_lines"], metrics["total_tokens"]) == (19, 1, 608)
    case_runs = client.search_runs(
        ["1"], filter_string=f"tags.`mlflow.parentRunId` = '{evaluation.info.run_id}'"
    )
    assert len(case_runs) == 19  # each case's own workflow run, nested under the evaluation
    cost = sum(run.data.metrics["total_cost_usd"] for run in case_runs)
    assert metrics["total_cost_usd"] == pytest.approx(cost)
    assert f"  cost: ${cost:.6f} USD total, ${cost / 19:.6f} per case" in out

    traces = mlflow.search_traces(
        locations=["1"], run_id=evaluation.info.run_id, return_type="list"
    )
    assert len(traces) == 19  # one row per case in MLflow's evaluation view
    verdicts = {}
    for trace in traces:
        (feedback,) = [a for a in trace.info.assessments if a.name == "expected.category"]
        (expectation,) = [a for a in trace.info.assessments if a.name == "category"]
        assert feedback.source.source_type == "CODE"
        verdicts[trace.info.trace_id] = (feedback.value, expectation.value)
    assert sorted(verdicts.values()).count((True, "billing")) == 7
    assert sorted(verdicts.values()).count((True, "bug")) == 8
    assert sorted(verdicts.values()).count((False, "billing")) == 4

    # At the threshold's other side, the same dataset passes (in-process: seconds less).
    assert main(["eval", str(workflow), "--dataset", str(dataset), "--min-pass-rate", "0.75"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "pass rate 78.9% meets --min-pass-rate 75.0%"


def test_backend_flag_chooses_the_backend_for_the_runs(
    gemini: GeminiLoopbackServer,
    mlflow_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import mlflow

    monkeypatch.setenv("AGENTS_PIPELINES_CASSETTE", "")  # restored after the test
    workflow = write(tmp_path, CLASSIFY)
    dataset = write(
        tmp_path, case("cats", "bug") + "\n" + json.dumps({"topic": "dogs"}), "cases.jsonl"
    )
    args = ["eval", str(workflow), "--dataset", str(dataset), "--backend", "simulated"]

    assert main([*args, "--cassette", "tape.jsonl", "--min-pass-rate", "1"]) == 1
    assert gemini.requests == []  # a key is set, and the flag still wins
    out = capsys.readouterr().out
    assert "2 line(s), 2 case(s), 0 skipped" in out
    # The line without `expected` runs, and has nothing to score.
    assert "  all (case pass rate)                   0     1  0.0%" in out
    runs = mlflow.MlflowClient().search_runs(
        ["1"], filter_string="params.llm_backend = 'simulated'"
    )
    assert len(runs) == 3  # the evaluation run and its two cases
    assert os.environ["AGENTS_PIPELINES_CASSETTE"] == "tape.jsonl"
    assert "MLFLOW_GENAI_EVAL_MAX_WORKERS" not in os.environ  # set for the evaluation only


def test_every_malformed_line_is_reported_with_its_number_and_fault(tmp_path: Path) -> None:
    # Without orchestration.inputs, which would fill a missing topic as for `run`.
    text = workflow_yaml("triage", ("classify", "{topic}", "category"), orchestration="")
    workflow = load_workflow(write(tmp_path, text))
    lines = [
        case("cats", "bug"),
        "[1, 2]",
        "",  # blank: neither a case nor a problem
        json.dumps({"expected": {"category": "bug"}}),
        json.dumps({"topic": "cats", "colour": "red"}),
        json.dumps({"topic": 3}),
        json.dumps({"topic": "cats", "expected": {"colour": "red"}}),
        json.dumps({"topic": "cats", "expected": ["bug"]}),
        "{not json",
    ]
    dataset = read_dataset(write(tmp_path, "\n".join(lines), "cases.jsonl"), workflow)

    assert [c.line for c in dataset.cases] == [1]
    assert [str(p) for p in dataset.problems] == [
        "line 2: not a JSON object but an array",
        "line 4: Invalid inputs for workflow triage: `topic` is required: give it as an input. "
        "Inputs: topic.",
        "line 5: Invalid inputs for workflow triage: `colour` is not an input of this workflow "
        "(it is not a state field). Inputs: topic.",
        "line 6: Invalid inputs for workflow triage: `topic` must be str: Input should be a "
        "valid string (got 3). Inputs: topic.",
        'line 7: "expected" names `colour`, which is not a state field of triage '
        "(fields: topic, category)",
        'line 8: "expected" must be an object of state fields, got an array',
        "line 9: not JSON: Expecting property name enclosed in double quotes (column 2)",
    ]
    assert dataset.lines == 8


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "error: Dataset {tmp}/cases.jsonl does not exist."),
        ("empty", "error: Dataset {tmp}/cases.jsonl is empty: write one JSON object per line"),
        ("bad workflow", "{tmp}/wf.yaml:"),
        ("untracked", "has observability.mlflow.enabled: false, and eval logs its results"),
    ],
)
def test_what_cannot_be_evaluated_exits_2(
    simulated: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    setup: str,
    message: str,
) -> None:
    config = "observability:\n  mlflow: {enabled: false}" if setup == "untracked" else ""
    workflow = write(tmp_path, CLASSIFY if setup != "bad workflow" else "flow: {}\n")
    if config:
        workflow = write(tmp_path, workflow_yaml("triage", ("a", "{topic}", "b"), config=config))
    if setup != "missing":
        write(tmp_path, "\n\n" if setup == "empty" else case("cats", "bug"), "cases.jsonl")

    code = main(["eval", str(workflow), "--dataset", str(tmp_path / "cases.jsonl")])

    assert code == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


def test_a_failed_run_fails_its_case_and_the_others_go_on(
    gemini: GeminiLoopbackServer,
    mlflow_uri: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import mlflow

    def answer(request: RecordedRequest) -> Reply | Fault:
        if "broken" in request.prompt_text:
            return Fault.bad_request("the request is malformed")
        return Reply.text_reply("bug", usage=USAGE)

    gemini.set_default(answer)
    workflow = write(tmp_path, CLASSIFY)
    lines = [case("the app crashes", "bug"), json.dumps({"topic": "a broken ticket"})]
    dataset = write(tmp_path, "\n".join(lines), "cases.jsonl")

    assert main(["eval", str(workflow), "--dataset", str(dataset), "--min-pass-rate", "0.5"]) == 0

    out = capsys.readouterr().out
    # The line without `expected` is scored all the same: its run failed.
    assert "  all (case pass rate)                   1     2  50.0%" in out
    assert "  failed: line 2: the run failed: LlmCallError: Workflow triage failed:" in out
    assert "the request is malformed" in out
    (evaluation,) = mlflow.MlflowClient().search_runs(
        ["1"], filter_string="tags.`mlflow.runType` = 'genai_evaluate'"
    )
    assert evaluation.data.metrics["failed_runs"] == 1
    assert evaluation.data.metrics["total_tokens"] == 32


def test_the_workflows_evals_score_each_case_once_beside_the_exact_matches(
    gemini: GeminiLoopbackServer,
    mlflow_uri: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The workflow's `evals:` are scorers: each case's judge runs inside its workflow run
    (priced, in the trace) and each verdict is one assessment on the case's trace."""
    import mlflow

    def answer(request: RecordedRequest) -> Reply:
        if "SHORT?" in request.prompt_text:  # the judge: passes the cats, fails the dogs
            passed = "cats" in request.prompt_text
            verdict = {"passed": passed, "rationale": "About cats." if passed else "Dogs."}
            return Reply.json_reply(verdict, usage=JUDGE_USAGE)
        return Reply.text_reply("bug", usage=USAGE)

    gemini.set_default(answer)
    evals = (
        "evals:\n"
        '  - {name: terse, judge: "SHORT? {topic} gave {category}"}\n'
        "  - {name: written, rule: {field: category, not_empty: true}}\n"
    )
    workflow = write(tmp_path, CLASSIFY + evals)
    dataset = write(tmp_path, case("cats", "bug") + "\n" + case("dogs", "bug"), "cases.jsonl")

    assert main(["eval", str(workflow), "--dataset", str(dataset)]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[2:6] == [
        "  expected.category                      2     2  100.0%",
        "  terse                                  1     2  50.0%",
        "  written                                2     2  100.0%",
        "  all (case pass rate)                   1     2  50.0%",
    ]
    (evaluation,) = mlflow.MlflowClient().search_runs(
        ["1"], filter_string="tags.`mlflow.runType` = 'genai_evaluate'"
    )
    assert len(gemini.requests) == 4  # two classify calls and two judge calls
    tokens = 2 * (USAGE.prompt + USAGE.candidates + JUDGE_USAGE.prompt + JUDGE_USAGE.candidates)
    assert evaluation.data.metrics["total_tokens"] == tokens
    traces = mlflow.search_traces(
        locations=[evaluation.info.experiment_id],
        run_id=evaluation.info.run_id,
        return_type="list",
    )
    assert len(traces) == 2
    for trace in traces:
        names = sorted(a.name for a in trace.info.assessments if a.name in ("terse", "written"))
        assert names == ["terse", "written"]  # once each: the run does not log them again
        terse = next(a for a in trace.info.assessments if a.name == "terse")
        assert terse.source.source_type == "LLM_JUDGE"
        assert terse.source.source_id == "gemini-2.5-flash"


def test_record_once_then_evaluate_offline_from_the_cassette(
    gemini: GeminiLoopbackServer,
    mlflow_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The README's CI loop: `eval --backend record` with a key, then `--backend replay`
    with no key and no server gives the same verdicts, tokens and cost."""
    import mlflow

    # The command sets both for its runs: restored after the test.
    monkeypatch.setenv("AGENTS_PIPELINES_CASSETTE", "")
    monkeypatch.setenv("AGENTS_PIPELINES_LLM_BACKEND", "gemini")
    gemini.set_default(model_answer)
    workflow = write(tmp_path, CLASSIFY)
    text, _ = twenty_lines()
    dataset = write(tmp_path, "\n".join(text.splitlines()[:6]) + "\n", "cases.jsonl")
    cassette = tmp_path / "triage.jsonl"
    args = ["eval", str(workflow), "--dataset", str(dataset), "--cassette", str(cassette)]

    assert main([*args, "--backend", "record", "--min-pass-rate", "0.5"]) == 0
    recorded = capsys.readouterr().out
    requests = len(gemini.requests)
    assert requests == 6 and len(cassette.read_text().splitlines()) == 6
    gemini.stop()
    monkeypatch.delenv("GOOGLE_API_KEY")

    assert main([*args, "--backend", "replay", "--min-pass-rate", "0.5"]) == 0
    replayed = capsys.readouterr().out

    assert len(gemini.requests) == requests  # nothing reached the (stopped) server
    figures = [line for line in recorded.splitlines() if "%" in line or "cost" in line]
    assert figures and figures == [
        line for line in replayed.splitlines() if "%" in line or "cost" in line
    ]
    first, second = sorted(
        mlflow.MlflowClient().search_runs(
            ["1"], filter_string="tags.`mlflow.runType` = 'genai_evaluate'"
        ),
        key=lambda run: run.info.start_time,
    )
    for metric in ("total_tokens", "total_cost_usd"):
        assert first.data.metrics[metric] == second.data.metrics[metric] > 0, metric
