"""Loading checks everything before anything runs; each error names file, line, path, fix."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from agents_pipelines.cli import main
from agents_pipelines.errors import WorkflowConfigError
from agents_pipelines.redaction import REDACTED_KEY
from agents_pipelines.spec import load_workflow, load_workflow_text, workflow_json_schema
from agents_pipelines.spec.findings import MAX_HINTS
from agents_pipelines.spec.yaml_source import (
    _parse_libyaml,
    _parse_reference,
)
from conftest import EXAMPLES, LINEAR, REPO, write

BASE = """\
schema_version: "1"
flow: {name: writer}
state:
  fields:
    topic: {type: str, required: true}
    outline: {type: str}
    article: {type: str}
    approved: {type: bool, default: false}
nodes:
  - id: outline
    prompt: "Outline {topic}."
    outputs: [outline]
  - id: write
    prompt: "Write about {topic} from {outline}."
    outputs: [article]
  - id: review
    prompt: "Approve? {article}"
    outputs: [approved]
edges:
  - {from: START, to: outline}
  - {from: outline, to: write}
  - {from: write, to: review}
  - from: review
    routes:
      - {when: {field: approved, equals: true}, to: END}
      - {to: write}
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(WorkflowConfigError) as info:
        load_workflow_text(text, "flows/writer.yaml")
    return [str(issue) for issue in info.value.issues]


def test_base_document_is_valid() -> None:
    workflow = load_workflow_text(BASE, "writer.yaml")
    assert [node.id for node in workflow.spec.nodes] == ["outline", "write", "review"]
    assert workflow.spec.input_fields == ["topic"]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            '    prompt: "Outline {topic}."\n',
            '    promt: "Outline {topic}."\n',
            r"flows/writer\.yaml:11:5: nodes\[0\]\.promt: unknown key `promt`\. "
            r"Fix: did you mean `prompt`\?",
            id="unknown-key-did-you-mean",
        ),
        pytest.param(
            "topic: {type: str, required: true}",
            "topic: {type: string, required: true}",
            r":5:\d+: state\.fields\.topic\.type: `string` is not allowed here\. "
            r"Fix: did you mean `str`\?",
            id="wrong-type-name",
        ),
        pytest.param(
            "approved: {type: bool, default: false}",
            "approved: {type: bool, default: 3}",
            r":8:\d+: state\.fields\.approved\.default: the default does not fit type bool",
            id="default-does-not-fit-type",
        ),
        pytest.param(
            "  - id: review\n",
            "  - id: write\n",
            r":16:\d+: nodes\[2\]\.id: duplicate node id `write` \(also nodes\[1\]\)",
            id="duplicate-node-id",
        ),
        pytest.param(
            "{from: outline, to: write}",
            "{from: outline, to: wirte}",
            r":21:\d+: edges\[1\]\.to: edge goes to unknown node `wirte`\. "
            r"Fix: did you mean `write`\?",
            id="edge-to-missing-node",
        ),
        pytest.param(
            "{from: START, to: outline}",
            "{from: START, to: write}",
            r":10:\d+: nodes\[0\]\.id: node `outline` can never run: no edge leads to it",
            id="unreachable-node",
        ),
        pytest.param(
            "      - {when: {field: approved, equals: true}, to: END}\n      - {to: write}\n",
            "      - {to: write}\n",
            r"nodes\[1\]\.id: node `write` has no path to END",
            id="cycle-without-exit",
        ),
        pytest.param(
            "Write about {topic} from {outline}.",
            "Write about {topic} from {outlin}.",
            r":14:\d+: nodes\[1\]\.prompt: placeholder \{outlin\} names no state field\. "
            r"Fix: did you mean `outline`\?",
            id="placeholder-missing-field",
        ),
        pytest.param(
            "Outline {topic}.",
            "Outline {topic.__class__}.",
            r"nodes\[0\]\.prompt: placeholder \{topic\.__class__\} uses attribute or index "
            r"access, which prompts do not allow",
            id="attribute-access",
        ),
        pytest.param(
            "Outline {topic}.",
            "Outline {topic[0]}.",
            r"uses attribute or index access",
            id="index-access",
        ),
        pytest.param(
            "Outline {topic}.",
            "Outline {topic!r}.",
            r"has a conversion or format spec",
            id="conversion",
        ),
        pytest.param(
            "Outline {topic}.",
            "Outline {topic.",
            r"the prompt template is malformed",
            id="unbalanced-brace",
        ),
        pytest.param(
            "    outputs: [article]\n",
            "    outputs: [artcle]\n",
            r":15:\d+: nodes\[1\]\.outputs\[0\]: output `artcle` is not a state field\. "
            r"Fix: did you mean `article`\?",
            id="output-not-a-state-field",
        ),
        pytest.param(
            "flow: {name: writer}",
            "flow: {name: writer, api_key: x}",
            r":2:\d+: flow\.api_key: API keys are not allowed in workflow files\. "
            r"Fix: delete it .* set GOOGLE_API_KEY",
            id="api-key-field",
        ),
        pytest.param(
            "flow: {name: writer}",
            "flow: {name: writer, description: AIzaSyA1234567890abcdefghijklmnopqrstuv}",
            r"holds a literal Google API key \(redacted here\)",
            id="literal-google-key",
        ),
        pytest.param(
            "{when: {field: approved, equals: true}, to: END}",
            "{when: {field: aproved, equals: true}, to: END}",
            r"condition names unknown state field `aproved`\. Fix: did you mean `approved`\?",
            id="condition-unknown-field",
        ),
        pytest.param(
            "{when: {field: approved, equals: true}, to: END}",
            "{when: {field: approved, gt: 3}, to: END}",
            r"`gt` compares numbers, but `approved` is bool",
            id="condition-type",
        ),
        pytest.param(
            "      - {to: write}\n",
            "      - {when: {field: approved, equals: false}, to: write}\n",
            r"the last route needs no `when`: it is the default",
            id="no-default-route",
        ),
        pytest.param(
            'schema_version: "1"',
            'schema_version: "2"',
            r":1:\d+: schema_version: `2` is not allowed here",
            id="schema-version",
        ),
        pytest.param(
            "flow: {name: writer}",
            "flow: {name: Writer-1}",
            r"flow\.name: `Writer-1` is not a valid name",
            id="bad-name",
        ),
    ],
)
def test_each_error_names_file_line_path_and_fix(old: str, new: str, expected: str) -> None:
    assert old in BASE, old
    errors = errors_of(BASE.replace(old, new, 1))
    assert any(re.search(expected, e) for e in errors), errors
    assert all(e.startswith("flows/writer.yaml") for e in errors)


def test_all_problems_in_a_file_are_reported_at_once() -> None:
    text = BASE.replace("[outline]\n", "[outlines]\n").replace("{outline}.", "{outlin}.")
    errors = errors_of(text)
    assert len(errors) == 2
    assert "output `outlines` is not a state field" in errors[0]
    assert "placeholder {outlin} names no state field" in errors[1]


def test_missing_section_and_wrong_shape() -> None:
    errors = errors_of(BASE.split("edges:")[0])
    assert errors == [
        "flows/writer.yaml:1:1: edges: required key `edges` is missing. Fix: add `edges:`"
    ]
    assert "the file must hold a mapping, got list" in errors_of("- 1\n- 2\n")[0]


def test_yaml_syntax_error_points_at_the_line() -> None:
    errors = errors_of(BASE.replace("  - id: write\n", "  - id: write\n   bad: [\n"))
    assert re.match(r"flows/writer\.yaml:\d+:\d+: YAML syntax error", errors[0]), errors


def test_duplicate_keys_are_refused() -> None:
    errors = errors_of(BASE.replace("flow: {name: writer}", "flow: {name: writer}\nflow: {}"))
    assert errors == [
        "flows/writer.yaml:3:1: flow: duplicate key `flow` (first defined on "
        "line 2). Fix: keep one of the two entries"
    ]


def test_billion_laughs_is_stopped(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    errors = errors_of("\n".join(lines) + "\n")
    assert "expands to more than 50,000 values" in errors[0]


def test_self_referencing_alias_is_stopped() -> None:
    errors = errors_of("a: &x\n  b: *x\n")
    assert "nests deeper than 40 levels" in errors[0]


def test_a_200_kb_file_of_brackets_gives_a_located_error(tmp_path: Path) -> None:
    """libyaml refuses the nesting (past 1,000 levels) and the reference reader explains."""
    path = tmp_path / "brackets.yaml"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(WorkflowConfigError) as info:
        load_workflow(path)
    [issue] = info.value.issues
    assert re.match(
        rf"{re.escape(str(path))}:1: the document nests deeper than 40 levels", str(issue)
    )


def test_non_utf8_and_huge_files(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b'schema_version: "1"\nflow: {name: caf\xe9}\n')
    with pytest.raises(
        WorkflowConfigError,
        match=r"latin1\.yaml:2: byte 0xe9 at offset 36 "
        r"is not UTF-8\. Fix: save the file as UTF-8",
    ):
        load_workflow(path)
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * 1_100_000)
    with pytest.raises(WorkflowConfigError, match=r"over the 1,000,000-byte limit"):
        load_workflow(huge)


def test_python_tags_are_refused() -> None:
    errors = errors_of(BASE + "extra: !!python/object/apply:os.system ['echo hi']\n")
    assert (
        "the YAML tag tag:yaml.org,2002:python/object/apply:os.system is not allowed" in (errors[0])
    ), errors
    scalar = errors_of(BASE + "extra: !!python/name:os.system ''\n")
    assert scalar == [
        "flows/writer.yaml:27: the YAML tag tag:yaml.org,2002:python/name:os.system is not "
        "allowed in workflow files. Fix: remove the tag; workflow files hold plain YAML data"
    ], scalar


def test_orchestration_inputs_are_checked() -> None:
    text = BASE + "orchestration:\n  inputs: {topic: 3, article: x}\n"
    errors = errors_of(text)
    assert any("input `topic` does not fit type str" in e for e in errors), errors
    assert any("input `article` is written by a node" in e for e in errors), errors


def test_validate_cli_reports_every_file_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, LINEAR, "good.yaml")
    write(tmp_path, LINEAR.replace("{topic}", "{topc}"), "bad1.yaml")
    write(tmp_path, LINEAR.replace("summarize, to: END", "summarize, to: ENDD"), "bad2.yml")
    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "bad1.yaml:9:" in out and "placeholder {topc} names no state field" in out
    assert "bad2.yml:13:" in out and "unknown node `ENDD`" in out
    assert "1 valid workflow(s), 2 invalid file(s), 2 problem(s)" in out
    assert main(["validate", str(EXAMPLES)]) == 0


def test_two_files_with_one_flow_name_are_reported(tmp_path: Path) -> None:
    write(tmp_path, LINEAR, "a.yaml")
    write(tmp_path, LINEAR, "b.yaml")
    assert main(["validate", str(tmp_path)]) == 1


def test_shipped_schema_file_is_current(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == workflow_json_schema()
    shipped = json.loads((REPO / "schema" / "workflow.schema.json").read_text())
    assert shipped == printed, "run: agents-pipelines schema > schema/workflow.schema.json"
    for example in EXAMPLES.glob("*.yaml"):
        assert example.read_text().startswith(
            "# yaml-language-server: $schema=../schema/workflow.schema.json"
        )


def test_many_bad_edges_get_few_did_you_mean_searches(monkeypatch: pytest.MonkeyPatch) -> None:
    """A did-you-mean compares a name with every option: done for every one of 2000 bad
    edges, validation would be quadratic. Only the first MAX_HINTS findings search."""
    searched: list[str] = []
    close_matches = difflib.get_close_matches

    def counting(word: str, *args: Any, **kwargs: Any) -> list[str]:
        searched.append(word)
        return close_matches(word, *args, **kwargs)

    monkeypatch.setattr(difflib, "get_close_matches", counting)
    nodes = "".join(f'  - {{id: n{i}, prompt: "{{topic}}", outputs: [out]}}\n' for i in range(30))
    edges = "".join(f"  - {{from: n{i % 30}, to: nn{i}}}\n" for i in range(2000))
    text = (
        'schema_version: "1"\nflow: {name: many}\nstate:\n  fields:\n'
        "    topic: {type: str, required: true}\n    out: {type: str}\n"
        f"nodes:\n{nodes}edges:\n  - {{from: START, to: n0}}\n{edges}"
    )
    errors = errors_of(text)
    assert len(errors) == 2000
    assert len(searched) == MAX_HINTS
    assert errors[0].endswith("edge goes to unknown node `nn0`. Fix: did you mean `n0`?")
    # Past the first findings, and with too many nodes to list: no search, a short fix.
    assert errors[-1].endswith("Fix: check the name against the 31 nodes")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "flow: {name: writer}",
            "flow: {name: writer}\nconfig: {execution: {max_steps: true}}",
            r"config\.execution\.max_steps: Input should be a valid integer \(got bool\)\. "
            r"Fix: use a whole number",
            id="bool-is-no-int",
        ),
        pytest.param(
            "flow: {name: writer}",
            "flow: {name: writer}\nconfig: {llm: {temperature: true}}",
            r"config\.llm\.temperature: Input should be a valid number \(got bool\)\. Fix: use a",
            id="bool-is-no-float",
        ),
        pytest.param(
            "required: true}",
            "required: 'yes'}",
            r"state\.fields\.topic\.required: Input should be a valid boolean \(got str\)\. "
            r"Fix: use true or false",
            id="text-is-no-bool",
        ),
        pytest.param(
            "equals: true",
            "equals: [1]",
            r"when\.equals: Input should be a valid string, a valid integer, a valid number or "
            r"a valid boolean \(got list\)\. Fix: use text, a whole number, a number or a boolean",
            id="union-errors-merged",
        ),
        pytest.param(
            "{from: outline, to: write}",
            "{from: [1], to: write}",
            r"edges\[1\]\.from\[0\]: Input should be a valid string \(got int\)\. Fix: quote it",
            id="union-member-the-value-meant",
        ),
        pytest.param(
            '    prompt: "Outline {topic}."\n',
            '    promt: "Outline {topic}."\n',
            r"nodes\[0\]\.promt: unknown key `promt`\. Fix: did you mean `prompt`\?",
            id="misspelt-key-is-not-also-missing",
        ),
        pytest.param(
            "flow: {name: writer}",
            "flow: {name: writer}\nconfig:\n  pricing:\n"
            "    gemini-2.5-flash: {input_per_million: 1, output_per_milion: 2}",
            r"config\.pricing\.gemini-2\.5-flash\.output_per_milion: unknown key "
            r"`output_per_milion`\. Fix: did you mean `output_per_million`\?",
            id="unknown-key-under-a-user-key",
        ),
        pytest.param(
            "flow: {name: writer}",
            "flow: {name: writer}\nconfig: {llm: {timeout_s: 0}}",
            r"config\.llm\.timeout_s: Input should be greater than 0 \(got 0\)\. "
            r"Fix: use a number > 0 and <= 3600",
            id="range-fix-gives-both-bounds",
        ),
        pytest.param(
            "Outline {topic}.",
            "Outline {tópico}.",
            r"placeholder \{tópico\} is not a state field name\. Fix: name a state field",
            id="non-identifier-placeholder",
        ),
        pytest.param(
            "    outline: {type: str}\n",
            "    api_key: {type: str}\n    outline: {type: str}\n",
            r"state\.fields\.api_key: a state field may not be named `api_key`.* "
            r"Fix: rename the field",
            id="state-field-named-api-key",
        ),
        pytest.param(
            "flow: {name: writer}",
            "flow: {name: writer, on: x}",
            r":2: flow\.on: the key `on` reads as the boolean true in YAML, not as a name\. "
            r'Fix: quote it: `"on":`',
            id="boolean-key",
        ),
        pytest.param(
            "flow: {name: writer}",
            "flow: {name: writer, description: !!binary aGk=}",
            r":2: the YAML tag tag:yaml\.org,2002:binary is not allowed in workflow files",
            id="binary-tag",
        ),
    ],
)
def test_one_mistake_gives_one_issue_with_a_fix(old: str, new: str, expected: str) -> None:
    assert old in BASE, old
    errors = errors_of(BASE.replace(old, new, 1))
    assert len(errors) == 1, errors
    assert re.search(expected, errors[0]), errors


def test_literal_api_keys_are_never_echoed() -> None:
    key = "AIza" + "Q" * 35
    text = BASE + f"orchestration:\n  inputs: {{{key}: x}}\n"
    text = text.replace("{from: outline, to: write}", "{from: outline, to: " + key + "}")
    errors = errors_of(text)
    assert not [e for e in errors if key in e], errors
    assert any(
        f"orchestration.inputs.{REDACTED_KEY}: this key holds a literal Google API key" in e
        for e in errors
    ), errors
    assert any(f"unknown node `{REDACTED_KEY}`" in e for e in errors), errors


def test_config_errors_redact_as_the_runtime_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """One redactor: the configured key's value, whatever its shape, is kept out of config
    errors too, behind the runtime's marker."""
    monkeypatch.setenv("GOOGLE_API_KEY", "configured-secret-value-42")
    text = BASE.replace(
        "{from: outline, to: write}", "{from: outline, to: configured-secret-value-42}"
    )
    errors = errors_of(text)
    assert any(f"unknown node `{REDACTED_KEY}`" in e for e in errors), errors
    assert not [e for e in errors if "configured-secret-value-42" in e], errors


def test_int_is_a_float_and_plain_equals_sign_is_text() -> None:
    text = BASE.replace("flow: {name: writer}", "flow: {name: writer, description: =}")
    workflow = load_workflow_text(text + "config: {llm: {temperature: 1}}\n", "writer.yaml")
    assert workflow.spec.flow.description == "="
    assert workflow.spec.config.llm.temperature == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "#" + "x" * 1_000_001, r"^flows/writer\.yaml: the file is 1,000,002 bytes", id="size"
        ),
        pytest.param(
            BASE.replace("Outline {topic}.", "Outline \x1b[1m{topic}."),
            r"^flows/writer\.yaml:11: the file holds the control character U\+001B",
            id="control-character",
        ),
        pytest.param(
            "[" * 1000 + "]" * 1000,
            r"^flows/writer\.yaml:1: the document nests deeper than 40 levels",
            id="deep-nesting",
        ),
        pytest.param(
            BASE + "orchestration: {inputs: [a, b",
            r"^flows/writer\.yaml:27:25: YAML syntax error: while parsing a flow sequence",
            id="unclosed-at-the-end-points-at-the-opening",
        ),
    ],
)
def test_load_workflow_text_refuses_what_load_workflow_refuses(text: str, expected: str) -> None:
    errors = errors_of(text)
    assert len(errors) == 1 and re.search(expected, errors[0]), errors


def test_plain_workflow_files_are_read_by_libyaml() -> None:
    """The fast path must not quietly stand aside for the files it is there for."""
    texts = [path.read_text(encoding="utf-8") for path in sorted(EXAMPLES.glob("*.yaml"))]
    for text in [*texts, LINEAR, LINEAR.replace("\n", "\r\n")]:
        fast = _parse_libyaml(text, "wf.yaml")
        assert fast is not None
        reference = _parse_reference(text, "wf.yaml")
        assert (fast.data, fast.positions) == (reference.data, reference.positions)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # libyaml reads these; PyYAML, the reference, does not.
        ("flow: {name: x}\nnodes: [what?]\n", r"wf\.yaml:2:13: YAML syntax error: .*got '\?'"),
        ("flow: |#\n  x\n", r"wf\.yaml:1:8: YAML syntax error: .*but found '#'"),
        ("flow:\n\t- x\n", r"wf\.yaml:2:1: YAML syntax error: .*'\\t'"),
        # The two readers place an empty value at the end of a file differently.
        ("# nothing\n---", r"wf\.yaml:2:4: the file must hold a mapping, got NoneType"),
        # libyaml refuses more than 1,000 levels (a ScannerError, not a crash).
        ("[" * 100_000, r"wf\.yaml:1: the document nests deeper than 40 levels"),
    ],
)
def test_where_the_readers_differ_the_reference_reads(text: str, expected: str) -> None:
    assert _parse_libyaml(text, "wf.yaml") is None
    with pytest.raises(WorkflowConfigError) as info:
        load_workflow_text(text, "wf.yaml")
    assert re.search(expected, str(info.value.issues[0])), str(info.value.issues[0])


def test_libyaml_reads_anchors_and_aliases_as_the_reference_does() -> None:
    text = "a: &x [1]\nb: *x\n"
    fast = _parse_libyaml(text, "wf.yaml")
    reference = _parse_reference(text, "wf.yaml")
    assert fast is not None
    assert (fast.data, fast.positions) == (reference.data, reference.positions)
    with pytest.raises(WorkflowConfigError) as info:
        load_workflow_text(text, "wf.yaml")
    assert re.search(r"wf\.yaml:1:1: .*schema_version", str(info.value.issues[0]))
