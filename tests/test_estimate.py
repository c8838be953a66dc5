"""`agents-pipelines estimate`: countTokens with a key, characters / 4 without one, stand-ins,
--items and --partitions, the definition metadata, and the README's measured error."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from agents_pipelines import load_workflow
from agents_pipelines.cli import main
from agents_pipelines.estimate_command import estimate_workflow, no_key_estimate
from agents_pipelines.orchestration import build_definitions
from agents_pipelines.spec.placeholders import parse_template
from agents_pipelines.testing import GeminiLoopbackServer
from agents_pipelines.testing.gemini_server.replies import count_tokens
from agents_pipelines.tracking.pricing import BundledCatalogPrices, MlflowPriceTable
from agents_pipelines.usage import TokenUsage
from agents_pipelines.usage.estimate import DEFAULT_OUTPUT_TOKENS, UNKNOWN_FIELD_TOKENS
from conftest import EXAMPLES, FAKE_KEY, docs_text, write

WORKFLOW = """\
schema_version: "1"
flow: {name: pitch}
state:
  fields:
    product: {type: str, required: true}
    reviews: {type: "list[str]", default: ["Great kettle!", "Too loud, sadly."]}
    labels: {type: "list[str]", default: []}
    pitch: {type: str, default: ""}
nodes:
  - id: label
    map: {over: reviews, as: review}
    prompt: "Label this review of a {product}: {review}"
    outputs: [labels]
    llm: {expected_output_tokens: 5}
  - id: write
    system: "You write pitches for {product}."
    prompt: "Write a pitch for a {product}, given these labels: {labels}"
    outputs: [pitch]
    llm: {max_output_tokens: 300}
edges:
  - {from: START, to: label}
  - {from: label, to: write}
  - {from: write, to: END}
config:
  pricing:
    gemini-2.5-flash: {input_per_million: 1.0, output_per_million: 10.0}
"""
REVIEWS = ["Great kettle!", "Too loud, sadly."]


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GOOGLE_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_with_a_key_input_tokens_are_what_count_tokens_returns(
    gemini: GeminiLoopbackServer, tmp_path: Path
) -> None:
    estimate = estimate_workflow(load_workflow(write(tmp_path, WORKFLOW)), {"product": "kettle"})
    label, write_node = estimate.nodes
    item_prompts = [f"Label this review of a kettle: {review}" for review in REVIEWS]
    # `{labels}` is written by `label`: its stand-in is label's whole reply, 5 tokens × 2 items.
    pitch_texts = [
        "You write pitches for kettle.",
        "Write a pitch for a kettle, given these labels: ",
    ]
    assert [r.prompt_text for r in gemini.count_requests] == [
        "\n".join(item_prompts),
        "\n".join(pitch_texts),
    ]
    assert gemini.requests == []  # countTokens only: no generateContent, nothing spent
    assert (label.calls, label.output_tokens) == (2, 10)
    assert label.input_tokens == sum(map(count_tokens, item_prompts)) == 10 + 12
    assert write_node.input_tokens == sum(map(count_tokens, pitch_texts)) + 10
    assert (write_node.calls, write_node.output_tokens) == (1, 300)
    assert estimate.counted_by == "Gemini countTokens"
    assert {r.api_key for r in gemini.count_requests} == {FAKE_KEY}


def test_a_failed_count_is_named_with_its_way_out(
    gemini: GeminiLoopbackServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", f"{gemini.base_url}/nowhere")  # a 404
    path = write(tmp_path, WORKFLOW)
    assert main(["estimate", str(path), "--input", "product=kettle"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: countTokens failed for gemini-2.5-flash: Gemini 404: ")
    assert "unset GOOGLE_API_KEY for the estimate by characters / 4" in err
    assert FAKE_KEY not in err


def test_without_a_key_the_cli_prints_the_table(
    no_key: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, WORKFLOW)
    assert main(["estimate", str(path), "--input", "product=kettle", "--partitions", "30"]) == 0
    item = [math.ceil(len(f"Label this review of a kettle: {r}") / 4) for r in REVIEWS]
    pitch = math.ceil(len("You write pitches for kettle.") / 4) + math.ceil(
        len("Write a pitch for a kettle, given these labels: ") / 4
    )
    label_in, write_in = sum(item), pitch + 10
    label_usd = (label_in * 1.0 + 10 * 10.0) / 1e6
    write_usd = (write_in * 1.0 + 300 * 10.0) / 1e6
    run_tokens, run_usd = label_in + write_in + 310, label_usd + write_usd
    assert capsys.readouterr().out.splitlines() == [
        "Estimate of pitch (input tokens: characters / 4 (no GOOGLE_API_KEY))",
        "  node                 model                     calls     input    output  cost",
        f"  label                gemini-2.5-flash              2 {label_in:>9}        10  "
        f"${label_usd:.6f}",
        f"  write                gemini-2.5-flash              1 {write_in:>9}       300  "
        f"${write_usd:.6f}",
        f"  one run: {run_tokens} tokens ({label_in + write_in} input, 310 output), "
        f"${run_usd:.6f} USD",
        f"  30 partitions: {30 * run_tokens} tokens ({30 * (label_in + write_in)} input, "
        f"9300 output), ${30 * run_usd:.6f} USD",
        "  price of gemini-2.5-flash: config.pricing",
        "  assumed: `labels`: 10 tokens (output of `label`)",
    ]


def test_items_set_every_map_nodes_calls(no_key: None, tmp_path: Path) -> None:
    workflow = load_workflow(write(tmp_path, WORKFLOW))
    two = estimate_workflow(workflow, {"product": "kettle"})
    fifty = estimate_workflow(workflow, {"product": "kettle"}, items=50)
    assert (fifty.nodes[0].calls, fifty.nodes[0].output_tokens) == (50, 250)
    # The per-item mean of the given reviews, times 50; `{labels}` grows with the items.
    assert fifty.nodes[0].input_tokens == round(two.nodes[0].input_tokens * 50 / 2)
    assert fifty.nodes[1].input_tokens == two.nodes[1].input_tokens - 10 + 250
    assert fifty.times(7).total_tokens == 7 * fifty.total_tokens
    assert fifty.times(7).cost_usd == pytest.approx(7 * fifty.cost_usd)


def test_an_empty_list_makes_no_call_and_an_item_used_twice_counts_twice(
    no_key: None, tmp_path: Path
) -> None:
    twice = WORKFLOW.replace("{product}: {review}", "{review} ({review})")
    workflow = load_workflow(write(tmp_path, twice))
    empty = estimate_workflow(workflow, {"product": "kettle", "reviews": []})
    label = empty.nodes[0]
    assert (label.calls, label.input_tokens, label.output_tokens) == (0, 0, 0)
    assert empty.stand_ins == ("`labels`: 0 tokens (output of `label`)",)
    three = estimate_workflow(workflow, {"product": "kettle", "reviews": []}, items=3)
    literal = math.ceil(len("Label this review of a  ()") / 4)
    per_item = math.ceil(UNKNOWN_FIELD_TOKENS / 3)  # the list's stand-in, shared by the items
    assert three.nodes[0].input_tokens == 3 * (literal + 2 * per_item)
    assert f"`reviews`: {UNKNOWN_FIELD_TOKENS} tokens (an input given empty)" in three.stand_ins


def test_stand_ins_size_what_is_not_known_before_the_run(no_key: None) -> None:
    estimate = no_key_estimate(load_workflow(EXAMPLES / "daily_review_labels.yaml"))
    load, label, digest = estimate.nodes
    assert (load.model, load.calls, load.cost_usd) == ("python", 0, 0.0)
    assert label.calls == 10  # the list is a Python step's output: the documented default
    assert label.output_tokens == 10 * DEFAULT_OUTPUT_TOKENS
    literal = math.ceil(len("Label the sentiment of this review: ") / 4)
    assert label.input_tokens == 10 * (literal + UNKNOWN_FIELD_TOKENS // 10)
    # `{labels}`: label's whole reply (10 calls); `{reviews}` and `{day}`: unknown texts.
    digest_literal = "Write a short digest of the reviews of .\nReviews: \nLabels: "
    assert digest.input_tokens == (
        math.ceil(len(digest_literal) / 4) + 10 * DEFAULT_OUTPUT_TOKENS + 2 * UNKNOWN_FIELD_TOKENS
    )
    assert estimate.stand_ins == (
        "label: 10 items of `reviews` (default)",
        f"`reviews`: {UNKNOWN_FIELD_TOKENS} tokens (a Python step's output)",
        f"`day`: {UNKNOWN_FIELD_TOKENS} tokens (an input not given)",
        f"`labels`: {10 * DEFAULT_OUTPUT_TOKENS} tokens (output of `label`)",
    )


def test_the_definition_metadata_has_the_estimate(no_key: None) -> None:
    asset = build_definitions(EXAMPLES).resolve_assets_def("review_digest")
    metadata = asset.specs_by_key[asset.key].metadata
    expected = no_key_estimate(load_workflow(EXAMPLES / "review_digest.yaml"))
    assert expected.total_tokens == 268 + DEFAULT_OUTPUT_TOKENS
    assert metadata["estimated_total_tokens"].value == expected.total_tokens
    assert metadata["estimated_cost_usd"].value == expected.cost_usd > 0
    assert "price of gemini-2.5-flash: mlflow bundled price table" in metadata["estimate"].value


@pytest.mark.parametrize(
    "model",
    ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite", "gemini-2.0-flash", "nope-1"],
)
def test_the_definition_time_prices_are_mlflows(model: str) -> None:
    """Read from MLflow's catalog files without importing mlflow, they must be its prices."""
    usage = TokenUsage(prompt=12_345, completion=6_789, cached=2_000)
    assert BundledCatalogPrices().price(model, usage) == MlflowPriceTable().price(model, usage)
    if model != "nope-1":
        assert MlflowPriceTable().price(model, usage) is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "colour=red"], "`colour` is not an input of this workflow"),
        (["--input", "labels=[]"], "`labels` is not an input of this workflow \\(a node writes"),
        (["--input", "reviews=oops"], "--input reviews: `oops` is not JSON"),
        (["--input", "reviews=3"], "`reviews` must be list\\[str\\]"),
        (["--input", "product"], "needs the form FIELD=VALUE"),
    ],
)
def test_bad_inputs_are_refused(
    no_key: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    assert main(["estimate", str(write(tmp_path, WORKFLOW)), *args]) == 1
    captured = capsys.readouterr()
    assert re.search(message, captured.err) and captured.out == ""


def test_items_and_partitions_take_positive_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["estimate", str(write(tmp_path, WORKFLOW)), "--items", "0"])
    assert exit_info.value.code == 2
    assert "`0` is not a whole number of 1 or more" in capsys.readouterr().err


def measured_error() -> tuple[int, int, float]:
    """Characters / 4 against the loopback server's countTokens rule, over the literal text
    of every prompt and system message of the shipped examples."""
    texts = [
        "".join(literal for literal, _ in parse_template(text).parts)
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for node in load_workflow(path).spec.nodes
        for text in (node.prompt, node.system)
        if text
    ]
    by_chars = sum(math.ceil(len(text) / 4) for text in texts)
    by_rule = sum(map(count_tokens, texts))
    return by_chars, by_rule, (by_chars - by_rule) / by_rule


def test_the_readme_states_the_measured_error() -> None:
    by_chars, by_rule, error = measured_error()
    readme = re.sub(r"\s+", " ", docs_text())
    assert f"{by_chars} tokens by characters / 4 against {by_rule}" in readme
    assert f"({error:+.0%})" in readme
