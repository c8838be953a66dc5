"""Property-based tests: whatever a workflow file or a run's inputs hold, the answer is a
result or one of our errors, never a traceback from inside a library.

Deterministic (``derandomize=True``) and without an example database, so CI sees the same
examples on every run.
"""

from __future__ import annotations

import itertools
import math
import re
import string
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._utils.schedules import is_valid_cron_string
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from agents_pipelines.errors import InvalidInputsError, WorkflowConfigError
from agents_pipelines.graph.state import initial_state
from agents_pipelines.orchestration.asset_factory import build_workflow_asset
from agents_pipelines.orchestration.inputs import fed_fields, time_key_field
from agents_pipelines.orchestration.resource import WorkflowRunner
from agents_pipelines.spec import Workflow, load_workflow, load_workflow_text
from agents_pipelines.spec.cron import cron_problem
from agents_pipelines.spec.field_types import (
    FIELD_TYPE_NAMES,
    element_name,
    python_type,
    zero_value,
)
from agents_pipelines.spec.models import WorkflowSpec
from agents_pipelines.spec.yaml_source import _parse_libyaml, _parse_reference
from conftest import EXAMPLES

PROPERTIES = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Loading may parse YAML in pure Python (~10 ms a document): fewer examples keep the file fast.
LOADING = settings(PROPERTIES, max_examples=100)
FILE = "flows/random.yaml"
GOOGLE_KEY = re.compile(r"AIza[0-9A-Za-z_\-]{35}")


def loads_or_refuses(text: str) -> Workflow | WorkflowConfigError:
    """``load_workflow_text``: a Workflow, or WorkflowConfigError whose every issue says
    how to fix it and never repeats an API key; anything else fails."""
    try:
        return load_workflow_text(text, FILE)
    except WorkflowConfigError as exc:
        assert exc.issues, "a WorkflowConfigError must carry at least one issue"
        for issue in exc.issues:
            shown = str(issue)
            assert shown.startswith(FILE), shown
            assert "Traceback" not in shown
            assert issue.fix, shown
            assert not GOOGLE_KEY.search(shown), shown
        event("refused: one issue" if len(exc.issues) == 1 else "refused: several issues")
        return exc


# ---------------------------------------------------------------------------------------
# Strategies: valid workflows, garbage, and valid workflows with garbage at one spot.

IDENTIFIER = st.builds(
    str.__add__,
    st.sampled_from(string.ascii_lowercase),
    st.text(string.ascii_lowercase + string.digits + "_", max_size=8),
).filter(lambda s: not re.fullmatch(r"(google_|gemini_)?api[_-]?key", s))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["START", "END", "str", "list[str]", "1", "", "{topic}", "api_key"]),
)
KEYS = st.one_of(
    st.sampled_from(
        [
            "schema_version",
            "flow",
            "state",
            "fields",
            "nodes",
            "edges",
            "config",
            "id",
            "prompt",
            "system",
            "outputs",
            "llm",
            "from",
            "to",
            "routes",
            "when",
            "field",
            "equals",
            "gt",
            "in",
            "type",
            "required",
            "default",
            "name",
            "inputs",
            "group",
            "execution",
            "max_steps",
            "observability",
            "mlflow",
            "tracking_uri",
            "api_key",
        ]
    ),
    st.text(max_size=8),
    st.integers(-2, 2),
    st.booleans(),
    st.none(),
)
GARBAGE = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)
PROMPT_BITS = st.one_of(
    st.sampled_from(
        [
            "{topic}",
            "{{",
            "}}",
            "{",
            "}",
            "{0}",
            "{}",
            "{topic.__class__}",
            "{topic[0]}",
            "{topic!r}",
            "{topic:>5}",
            "{nope}",
            "{ topic }",
            "{topic!}",
            "{:{}}",
            "Write ",
        ]
    ),
    st.text(alphabet="{}[]!:.0 ab_", max_size=4),
    st.text(max_size=6),
)
PROMPTS = st.lists(PROMPT_BITS, max_size=6).map("".join)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


def values_of(type_name: str) -> st.SearchStrategy[Any]:
    """Values that fit a field type under strict validation."""
    scalar: dict[str, st.SearchStrategy[Any]] = {
        "str": st.text(max_size=10),
        "int": st.integers(-(2**40), 2**40),
        "float": st.floats(allow_nan=False) | st.integers(-1000, 1000),
        "bool": st.booleans(),
        "Any": JSON,
    }
    element = element_name(type_name)
    if element is None:
        return scalar[type_name]
    if type_name.startswith("list["):
        return st.lists(scalar[element], max_size=3)
    return st.dictionaries(st.text(max_size=6), scalar[element], max_size=3)


@st.composite
def condition(draw: st.DrawFn, fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    name = draw(st.sampled_from(sorted(fields)))
    type_name = fields[name]["type"]
    ops = ["is_empty"]
    if element_name(type_name) is None:
        ops += ["equals", "not_equals", "in"]
    if type_name in ("int", "float"):
        ops += ["gt", "gte", "lt", "lte"]
    if type_name == "str" or element_name(type_name) is not None:
        ops.append("contains")
    op = draw(st.sampled_from(ops))
    if op == "is_empty":
        value: Any = draw(st.booleans())
    elif op in ("equals", "not_equals"):
        value = draw(values_of(type_name))
    elif op == "in":
        value = draw(st.lists(values_of(type_name), max_size=3))
    elif op == "contains":
        value = draw(st.text(max_size=4) | st.integers(-5, 5))
    else:
        value = draw(st.integers(-100, 100) | st.floats(-1e6, 1e6))
    return {"field": name, op: value}


@st.composite
def valid_workflows(draw: st.DrawFn) -> dict[str, Any]:
    """A workflow document that must load: a chain of nodes, optionally a routed loop."""
    names = draw(st.lists(IDENTIFIER, min_size=3, max_size=8, unique=True))
    node_ids = draw(st.lists(IDENTIFIER, min_size=1, max_size=4, unique=True))
    n_inputs = draw(st.integers(1, max(1, len(names) - len(node_ids))))
    inputs, outputs = names[:n_inputs], names[n_inputs:]
    fields: dict[str, dict[str, Any]] = {}
    for name in names:
        type_name = draw(st.sampled_from(FIELD_TYPE_NAMES))
        field: dict[str, Any] = {"type": type_name}
        if name in inputs and draw(st.booleans()):
            field["required"] = True
        elif draw(st.booleans()):
            field["default"] = draw(values_of(type_name))
        if draw(st.booleans()):
            field["description"] = draw(st.text(max_size=20))
        fields[name] = field
    nodes = []
    for i, node_id in enumerate(node_ids):
        # Each node writes its own outputs, or (when fields run short) the last one.
        mine = outputs[i :: len(node_ids)] or [outputs[-1]]
        parts = draw(
            st.lists(
                st.sampled_from(names).map(lambda n: "{" + n + "}")
                | st.text(max_size=8).map(lambda t: t.replace("{", "{{").replace("}", "}}")),
                min_size=1,
                max_size=5,
            )
        )
        node: dict[str, Any] = {"id": node_id, "prompt": "".join(parts) or "go", "outputs": mine}
        if draw(st.booleans()):
            node["llm"] = {"temperature": draw(st.floats(0, 2)), "max_retries": 1}
        nodes.append(node)
    written = {out for node in nodes for out in node["outputs"]}
    for name in written:  # a written field is no input
        fields[name].pop("required", None)
    real_inputs = [n for n in names if n not in written]
    edges: list[dict[str, Any]] = [{"from": "START", "to": node_ids[0]}]
    edges += [{"from": a, "to": b} for a, b in itertools.pairwise(node_ids)]
    if draw(st.booleans()):
        edges.append(
            {
                "from": node_ids[-1],
                "routes": [
                    {"when": draw(condition(fields)), "to": draw(st.sampled_from(node_ids))},
                    {"to": "END"},
                ],
            }
        )
    else:
        edges.append({"from": node_ids[-1], "to": "END"})
    doc: dict[str, Any] = {
        "schema_version": "1",
        "flow": {"name": draw(IDENTIFIER), "description": draw(st.text(max_size=20))},
        "state": {"fields": fields},
        "nodes": nodes,
        "edges": edges,
    }
    if draw(st.booleans()):
        doc["config"] = {
            "llm": {"temperature": draw(st.floats(0, 2)), "timeout_s": 30},
            "execution": {"max_steps": draw(st.integers(1, 10_000))},
            "observability": {
                "mlflow": {
                    "tracking_uri": draw(
                        st.sampled_from(["sqlite:///x.db", "http://h:5000", "file:///tmp/m"])
                    ),
                    "artifact_level": draw(st.sampled_from(["minimal", "standard", "full"])),
                }
            },
        }
    defaults = {n: draw(values_of(fields[n]["type"])) for n in real_inputs if draw(st.booleans())}
    if defaults or draw(st.booleans()):
        doc["orchestration"] = {"group": draw(IDENTIFIER), "inputs": defaults}
    return doc


def _paths(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*path, index))
    return found


@st.composite
def mutated_workflows(draw: st.DrawFn) -> Any:
    """A valid workflow with one spot replaced, removed, or given an extra key."""
    doc = draw(valid_workflows())
    path = draw(st.sampled_from(_paths(doc)))
    if not path:
        return draw(GARBAGE)
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    how = draw(st.sampled_from(["replace", "remove", "add_key", "prompt"]))
    if how == "remove":
        del parent[path[-1]]
    elif how == "add_key" and isinstance(parent[path[-1]], dict):
        parent[path[-1]][draw(KEYS)] = draw(GARBAGE)
    elif how == "prompt":
        parent[path[-1]] = draw(PROMPTS)
    else:
        parent[path[-1]] = draw(GARBAGE)
    return doc


def dump(doc: Any, unicode: bool = False) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=unicode)


# ---------------------------------------------------------------------------------------
# Properties of loading.


def assert_located(result: Workflow | WorkflowConfigError) -> None:
    """A document yaml.safe_dump wrote is never empty: each issue can point at a line."""
    if isinstance(result, WorkflowConfigError):
        assert all(issue.line is not None for issue in result.issues), str(result)


@LOADING
@given(valid_workflows(), st.booleans())
def test_generated_valid_workflows_load(doc: dict[str, Any], unicode: bool) -> None:
    result = loads_or_refuses(dump(doc, unicode))
    assert isinstance(result, Workflow), str(result)
    assert result.spec.flow.name == doc["flow"]["name"]
    assert [node.id for node in result.spec.nodes] == [node["id"] for node in doc["nodes"]]


@LOADING
@given(mutated_workflows())
def test_mutated_workflows_load_or_give_located_issues(doc: Any) -> None:
    assert_located(loads_or_refuses(dump(doc)))


@LOADING
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "schema_version": GARBAGE | st.just("1"),
            "flow": GARBAGE | st.fixed_dictionaries({"name": GARBAGE | IDENTIFIER}),
            "state": GARBAGE
            | st.fixed_dictionaries(
                {"fields": st.dictionaries(KEYS | IDENTIFIER, GARBAGE, max_size=3) | GARBAGE}
            ),
            "nodes": st.lists(
                st.fixed_dictionaries(
                    {"id": GARBAGE | IDENTIFIER, "prompt": PROMPTS, "outputs": GARBAGE}
                )
                | GARBAGE,
                max_size=3,
            ),
            "edges": st.lists(
                st.fixed_dictionaries({"from": GARBAGE, "to": GARBAGE})
                | st.fixed_dictionaries(
                    {"from": GARBAGE, "routes": st.lists(st.dictionaries(KEYS, GARBAGE))}
                ),
                max_size=3,
            ),
            "config": GARBAGE,
            "orchestration": GARBAGE,
        },
    )
    | GARBAGE
)
def test_garbage_documents_give_workflow_config_errors(doc: Any) -> None:
    assert_located(loads_or_refuses(dump(doc)))


YAML_BITS = st.sampled_from(
    [
        *[
            "schema_version:",
            "flow:",
            " {name: x}",
            "state:",
            "  fields:",
            "nodes:",
            "  - ",
            "id: a",
            "edges:",
        ],
        *[
            "{",
            "}",
            "[",
            "]",
            ":",
            ", ",
            "\n",
            "  ",
            "\t",
            "&a ",
            "*a",
            "'",
            '"',
            "# c\n",
            "---\n",
            "...\n",
            "? ",
            "<<: *a\n",
            "!!binary ",
        ],
        *[">-\n", "%YAML 1.1\n", "~", "yes", "0x1F", "1e3", ".nan", "{topic}"],
        "|\n",
        "!!python/name:os.system ''",
        "!!python/object/apply:os.system [x]",
        "AIza" + "x" * 35,
    ]
)


@PROPERTIES
@given(st.text() | st.lists(YAML_BITS | st.text(max_size=3), max_size=30).map("".join))
def test_raw_text_gives_workflow_config_errors(text: str) -> None:
    loads_or_refuses(text)


@st.composite
def damaged_text(draw: st.DrawFn) -> str:
    """A valid workflow's YAML with a few characters deleted, inserted or swapped."""
    text = dump(draw(valid_workflows()))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        text = (
            text[:at]
            + draw(st.sampled_from(["", ":", "-", "{", "]", '"', "\n", " ", "\t"]))
            + text[at + cut :]
        )
    return text


@LOADING
@given(damaged_text())
def test_damaged_yaml_gives_workflow_config_errors(text: str) -> None:
    loads_or_refuses(text)


def reads_alike(text: str) -> None:
    """The libyaml-composed reader gives the reference's values and positions, or stands aside."""
    fast = _parse_libyaml(text, FILE)
    if fast is None:
        event("read by the reference reader")
        return
    event("read by libyaml")
    reference = _parse_reference(text, FILE)  # raises if only libyaml takes the text
    assert repr(fast.data) == repr(reference.data)  # repr: key order counts, and NaN == NaN
    assert fast.positions == reference.positions


@PROPERTIES
@given(
    st.text()
    | st.lists(YAML_BITS | st.text(max_size=3), max_size=30).map("".join)
    | damaged_text()
    | st.tuples(valid_workflows(), st.booleans()).map(lambda t: dump(*t))
    | valid_workflows().map(lambda d: yaml.safe_dump(d, default_flow_style=True, width=60))
)
def test_libyaml_reads_as_the_reference_reader_does(text: str) -> None:
    reads_alike(text)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("properties") / "random.yaml"


@LOADING
@given(
    raw=st.binary(max_size=200)
    | damaged_text().map(lambda t: t.encode("utf-8"))
    | valid_workflows().map(lambda d: dump(d, True).encode("utf-16"))
    | st.tuples(valid_workflows(), st.binary(min_size=1, max_size=3)).map(
        lambda t: dump(t[0]).encode() + t[1]
    )
)
def test_raw_bytes_in_a_file_give_workflow_config_errors(raw: bytes, scratch: Path) -> None:
    scratch.write_bytes(raw)
    try:
        load_workflow(scratch)
    except WorkflowConfigError as exc:
        assert all(str(issue).startswith(str(scratch)) for issue in exc.issues)


# ---------------------------------------------------------------------------------------
# Properties of run inputs: initial_state, and the Launchpad's config validation.

ALL_TYPES = """\
schema_version: "1"
flow: {name: all_types}
state:
  fields:
    s: {type: str, required: true}
    i: {type: int, default: 3}
    f: {type: float}
    b: {type: bool, default: true}
    ls: {type: "list[str]"}
    li: {type: "list[int]", default: [1, 2]}
    lf: {type: "list[float]"}
    lb: {type: "list[bool]", required: true}
    ds: {type: "dict[str, str]"}
    di: {type: "dict[str, int]", default: {a: 1}}
    df: {type: "dict[str, float]"}
    da: {type: "dict[str, Any]"}
    out: {type: str}
nodes:
  - id: go
    prompt: "{s} {i} {f} {b} {ls} {li} {lf} {lb} {ds} {di} {df} {da}"
    outputs: [out]
edges:
  - {from: START, to: go}
  - {from: go, to: END}
orchestration:
  inputs: {f: 0.5, ds: {k: v}}
"""

WORKFLOWS = {p.stem: load_workflow(p) for p in sorted(EXAMPLES.glob("*.yaml"))}
WORKFLOWS["all_types"] = load_workflow_text(ALL_TYPES, "all_types.yaml")


def run_inputs(spec: WorkflowSpec) -> st.SearchStrategy[dict[str, Any]]:
    """Inputs that fit (some of) the input fields, often mixed with noise: other state
    fields, unknown names, and values of any JSON type."""
    # A time partition's key field is the partition's to fill: the Launchpad has no field
    # for it (the run's partition gives it), so the inputs a user can give leave it out.
    key = time_key_field(spec)
    givable = [n for n in spec.input_fields if n != key]
    fitting = st.fixed_dictionaries(
        {}, optional={n: values_of(spec.state.fields[n].type) for n in givable}
    )
    others = [n for n in spec.state.fields if n != key]
    names = st.sampled_from(others) | st.text(max_size=6).filter(lambda name: name != key)
    noise = st.dictionaries(names, JSON | st.floats(), min_size=1, max_size=3)
    return fitting | st.builds(lambda a, b: {**a, **b}, fitting, noise)


def assert_fits_state_types(spec: WorkflowSpec, state: dict[str, Any]) -> None:
    assert set(state) == set(spec.state.fields)
    for name, field in spec.state.fields.items():
        try:
            TypeAdapter(python_type(field.type)).validate_python(state[name], strict=True)
        except ValidationError as exc:  # pragma: no cover - the failure message
            raise AssertionError(f"{name}: {state[name]!r} is not {field.type}") from exc


def fed_stand_ins(spec: WorkflowSpec) -> dict[str, Any]:
    """What a partition or an upstream workflow gives the inputs it feeds, as the asset
    merges it under the run config (orchestration/inputs.py): the Launchpad leaves those
    fields unset on purpose, so a value of each field's type stands in for theirs. A time
    partition's key field is always fed (the asset writes the key over anything else)."""
    fed = {
        name: zero_value(spec.state.fields[name].type)
        for name in sorted(fed_fields(spec))
        if name not in spec.orchestration.inputs
    }
    if (key := time_key_field(spec)) is not None:
        fed[key] = "2026-11-01"
    return fed


_JOBS: dict[str, tuple[Any, str]] = {}


def launchpad_config(name: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """What Dagster makes of ``inputs`` as the asset's run config: the op config the asset
    receives (defaults filled in), or None when the Launchpad would refuse it.

    ``dagster.validate_run_config`` on the asset's implicit job is the public path the
    Launchpad and ``materialize`` take, without running anything (well under 1 ms a call).
    """
    if name not in _JOBS:
        asset = build_workflow_asset(WORKFLOWS[name])
        upstream = [
            build_workflow_asset(WORKFLOWS[dep.workflow])
            for dep in WORKFLOWS[name].spec.orchestration.deps
        ]
        defs = dg.Definitions(
            assets=[asset, *upstream], resources={"workflow_runner": WorkflowRunner()}
        )
        _JOBS[name] = (defs.resolve_implicit_global_asset_job_def(), asset.op.name)
    job, op = _JOBS[name]
    try:
        config = dg.validate_run_config(job, {"ops": {op: {"config": inputs}}})
    except dg.DagsterInvalidConfigError:
        return None
    return dict(config["ops"][op]["config"])


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_run_inputs_are_accepted_or_refused_alike(name: str) -> None:
    """initial_state returns a state of the declared types or raises InvalidInputsError;
    the Launchpad's config validation accepts exactly the inputs initial_state accepts, and
    what it hands the asset (defaults filled in) is a valid state too."""
    spec = WORKFLOWS[name].spec
    fed = fed_stand_ins(spec)
    outcomes: set[tuple[bool, bool]] = set()

    @PROPERTIES
    @given(run_inputs(spec))
    def check(inputs: dict[str, Any]) -> None:
        try:
            state = initial_state(spec, {**fed, **inputs})
        except InvalidInputsError as exc:
            assert str(exc).startswith(f"Invalid inputs for workflow {spec.flow.name}: ")
            state = None
        else:
            assert_fits_state_types(spec, state)
            for key, value in inputs.items():
                assert state[key] == value or (isinstance(value, float) and math.isnan(value))
        config = launchpad_config(name, inputs)
        outcomes.add((state is not None, config is not None))
        assert (state is not None) == (config is not None), (inputs, config)
        if config is not None:
            assert_fits_state_types(spec, initial_state(spec, {**fed, **config}))

    check()
    # The strategy reaches both outcomes.
    assert outcomes == {(True, True), (False, False)}, outcomes


def test_launchpad_defaults_are_valid_inputs() -> None:
    """With no config at all, each workflow whose required inputs all have a default, or
    come from a partition or an upstream workflow, runs on its defaults."""
    for name, workflow in WORKFLOWS.items():
        spec = workflow.spec
        fed = fed_stand_ins(spec)
        config = launchpad_config(name, {})
        required = [n for n in spec.input_fields if spec.state.fields[n].required]
        missing = [n for n in required if n not in {**spec.orchestration.inputs, **fed}]
        assert (config is None) == bool(missing), (name, config)
        if config is not None:
            assert_fits_state_types(spec, initial_state(spec, {**fed, **config}))


# ---------------------------------------------------------------------------------------
# Cron expressions: `validate` gives Dagster's verdict.

# Per field: values Dagster takes, then values at and past its edges, names it does not
# know, and special characters in the wrong place. L (last), # (nth weekday) and ? (any)
# are taken; W is not (newer croniter releases take it: a reason to keep Dagster's).
CRON_VALUES = (
    (["0", "5", "30", "59", "007"], ["60", "61", "99", "-1", "L", "?"]),
    (["0", "9", "12", "23"], ["24", "25", "mon"]),
    (["1", "15", "28", "29", "30", "31", "L", "?"], ["0", "32", "15W", "LW", "L-2", "L5"]),
    (["1", "2", "12", "jan", "FEB", "Dec"], ["0", "13", "foo", "L", "2#1"]),
    (["0", "1", "5", "7", "mon", "FRI", "Sun", "L5", "MON#2", "1#5", "?"], ["8", "5L", "2#6"]),
)
CRON_ALIASES = ["@hourly", "@daily", "@WEEKLY", "@monthly", "@yearly", "@annually", "@midnight"]


@st.composite
def cron_items(draw: st.DrawFn, field: int) -> str:
    """One item of a field: mostly a value it takes, alone, as a range or with a step."""
    good, bad = CRON_VALUES[field]

    def value() -> str:
        return draw(st.sampled_from(good if draw(st.integers(0, 9)) else [*bad, "x", ""]))

    shape = draw(st.sampled_from(["value", "value", "value", "range", "step", "range_step"]))
    item = draw(st.sampled_from(["*", value()])) if shape == "step" else value()
    if shape in ("range", "range_step"):
        item = f"{item}-{value()}"
    if shape in ("step", "range_step"):
        item = f"{item}/{draw(st.sampled_from(['1', '2', '15', '0', '61', 'x']))}"
    return item


@st.composite
def cron_expressions(draw: st.DrawFn) -> str:
    """Five fields (sometimes 4, 6 or 7, the extra ones with another field's items), each
    `*` or a list of items; or an alias, real or not."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from([*CRON_ALIASES, "@reboot", "@every5", "@", "daily"]))
    count = draw(st.sampled_from([5] * 8 + [4, 6, 7]))
    fields = []
    for i in range(count):
        source = i if i < 5 else draw(st.integers(0, 4))
        if draw(st.integers(0, 2)):
            fields.append(",".join(draw(st.lists(cron_items(source), min_size=1, max_size=2))))
        else:
            fields.append("*")
    return " ".join(fields)


def dagster_accepts(expression: str) -> bool:
    """What ScheduleDefinition and AutomationCondition.on_cron check. Some strings make it
    raise (croniter's TypeError): the code location then fails to load, so that is a no."""
    try:
        return is_valid_cron_string(expression)
    except Exception:
        return False


@example("0 0 30 2 *")
@example("0 0 31 FEB *")
@example("0 0 L * *")
@example("0 9 ? * MON#2")
@example("0 9 * * L5")
@example("0 0 15W * *")
@settings(PROPERTIES, max_examples=400)
@given(cron_expressions())
def test_cron_verdict_is_dagsters(expression: str) -> None:
    problem = cron_problem(expression)
    event("accepted" if problem is None else "refused")
    assert (problem is None) == dagster_accepts(expression), (expression, problem)
    assert problem is None or problem.strip(), expression


def test_cron_expressions_reach_both_verdicts() -> None:
    """The strategy is not all refusals (most random cron text is invalid)."""
    verdicts: set[bool] = set()

    @settings(PROPERTIES, max_examples=100)
    @given(cron_expressions())
    def collect(expression: str) -> None:
        verdicts.add(dagster_accepts(expression))

    collect()
    assert verdicts == {True, False}
