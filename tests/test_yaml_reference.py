"""The README's YAML reference lists every key of the JSON Schema, with its default, and names
the asset checks as Dagster names them.

The table's conventions, which the parser below reads:
- the key column names one or more key paths: `flow.name`, `nodes[].llm`, with `NAME`, `MODEL`
  or `KEY` standing for a name the user chooses (`state.fields.NAME.type`);
- the meaning column may list a key's sub-keys in backticks (`nodes[].llm`: per-node `model`,
  `temperature`...);
- a default is written `(default VALUE)` right after a sub-key, or, in a row about one key
  only, `default VALUE` anywhere in the meaning.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from agents_pipelines.orchestration import build_definitions
from agents_pipelines.spec import workflow_json_schema
from agents_pipelines.spec.models import OutputCheck
from conftest import EXAMPLES, REPO

README = (REPO / "README.md").read_text()
NO_DEFAULT = object()
# Defaults that mean "not set": nothing to state.
UNSET = (None, "", [], {})


# The schema's keys ----------------------------------------------------------------------


def schema_keys() -> dict[str, Any]:
    """Every leaf key path of the JSON Schema, with its default (or NO_DEFAULT)."""
    schema = workflow_json_schema()
    return dict(_walk(schema, schema, "", NO_DEFAULT))


def _walk(root: dict[str, Any], node: dict[str, Any], path: str, default: Any) -> Iterator[Any]:
    node = _resolve(root, node)
    if "anyOf" in node:
        for branch in node["anyOf"]:
            if branch.get("type") != "null":
                yield from _walk(root, branch, path, default)
    elif node.get("properties"):
        for name, child in node["properties"].items():
            key = f"{path}.{name}" if path else name
            yield from _walk(root, child, key, child.get("default", NO_DEFAULT))
    elif _has_keys(root, child := _map_values(node)):
        yield from _walk(root, child, f"{path}.*", NO_DEFAULT)
    elif node.get("type") == "array" and _has_keys(root, node["items"]):
        yield from _walk(root, node["items"], f"{path}[]", NO_DEFAULT)
    else:
        yield path, default


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return dict(root["$defs"][node["$ref"].split("/")[-1]])
    return node


def _map_values(node: dict[str, Any]) -> dict[str, Any]:
    """The schema of a mapping's values (`state.fields`, `config.pricing`), else {}."""
    patterns = list(node.get("patternProperties", {}).values())
    extra = node.get("additionalProperties")
    return patterns[0] if patterns else extra if isinstance(extra, dict) else {}


def _has_keys(root: dict[str, Any], node: dict[str, Any]) -> bool:
    """Whether values of this schema are objects with named keys of their own."""
    node = _resolve(root, node)
    if "anyOf" in node:
        return any(_has_keys(root, branch) for branch in node["anyOf"])
    return bool(node.get("properties"))


# The README's table -----------------------------------------------------------------------


def reference_rows(text: str = README) -> list[tuple[list[str], str]]:
    """(key paths, meaning) per row of the YAML reference table; a chosen name is `*`."""
    section = text.split("### YAML reference\n", 1)[1].split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        _, keys, meaning, _ = re.split(r"(?<!\\)\|", line)
        paths = [re.sub(r"\b[A-Z]+\b", "*", key) for key in re.findall(r"`([^`]+)`", keys)]
        rows.append((paths, meaning.strip()))
    return rows


def covered(row: tuple[list[str], str]) -> set[str]:
    """The key paths a row documents: its keys, and each with the sub-keys it lists."""
    paths, meaning = row
    subkeys = re.findall(r"`([a-z_]+)`", meaning)
    return set(paths) | {f"{path}.{sub}" for path in paths for sub in subkeys}


def states_default(row: tuple[list[str], str], path: str, default: Any) -> bool:
    paths, meaning = row
    values = "|".join(re.escape(value) for value in _written(default))
    value = rf"`?(?:{values})`?(?=[\s),;:]|$)"
    if paths == [path] and re.search(rf"\bdefault:?\s+{value}", meaning):
        return True
    return re.search(rf"`{re.escape(path.split('.')[-1])}` \(default {value}", meaning) is not None


def _written(default: Any) -> list[str]:
    if isinstance(default, bool):
        return [str(default).lower()]
    if isinstance(default, int | float):
        number = int(default) if float(default).is_integer() else default
        return [str(number), f"{number:,}"]
    return [str(default)]


def undocumented(rows: list[tuple[list[str], str]]) -> set[str]:
    documented = set().union(*map(covered, rows))
    return set(schema_keys()) - documented


# Tests ------------------------------------------------------------------------------------


def test_the_schema_walk_finds_keys_at_every_depth_with_their_defaults() -> None:
    keys = schema_keys()
    assert keys["schema_version"] is NO_DEFAULT
    assert keys["state.fields.*.required"] is False
    assert keys["nodes[].map.on_item_error"] == "fail"
    assert keys["edges[].routes[].when.in"] is None
    assert keys["config.pricing.*.input_per_million"] is NO_DEFAULT
    assert keys["orchestration.retry.jitter"] == "plus_minus"
    assert keys["orchestration.partitions.daily.timezone"] == "UTC"
    # Free-form mappings and lists of names are keys in themselves.
    assert {"orchestration.inputs", "orchestration.partitions.static", "nodes[].tools"} <= set(keys)
    assert {"orchestration.automation", "orchestration.automation.on_cron"} <= set(keys)


def test_the_reference_lists_every_key_of_the_schema() -> None:
    assert undocumented(reference_rows()) == set()


def test_a_key_left_out_of_the_reference_is_found() -> None:
    rows = [row for row in reference_rows() if row[0] != ["nodes[].description"]]
    assert undocumented(rows) == {"nodes[].description"}
    trimmed = README.replace("`max_retries` (default 2), ", "")
    assert undocumented(reference_rows(trimmed)) == {"orchestration.retry.max_retries"}


def test_every_key_named_in_the_key_column_is_in_the_schema() -> None:
    keys = schema_keys()
    for paths, _ in reference_rows():
        for path in paths:
            assert any(k == path or k.startswith((f"{path}.", f"{path}[]")) for k in keys), path


def test_the_reference_states_every_default() -> None:
    rows = reference_rows()
    missing = {
        path: default
        for path, default in schema_keys().items()
        if default is not NO_DEFAULT
        and default not in UNSET
        and not any(path in covered(row) and states_default(row, path, default) for row in rows)
    }
    assert missing == {}


def test_a_wrong_default_is_found() -> None:
    row = (["orchestration.retry"], "`max_retries` (default 3), `delay_s` (default 10)")
    assert states_default(row, "orchestration.retry.delay_s", 10.0)
    assert not states_default(row, "orchestration.retry.max_retries", 2)
    assert not states_default(row, "orchestration.retry.delay_s", 1)


# Asset check names ------------------------------------------------------------------------


def section(title: str) -> str:
    return README.split(f"### {title}\n", 1)[1].split("\n#", 1)[0]


def prose(text: str) -> str:
    """The text with its line breaks and runs of spaces as single spaces."""
    return re.sub(r"\s+", " ", text)


def yaml_block(text: str) -> Any:
    return yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])


def test_the_readme_names_the_asset_checks_as_dagster_does(tmp_path: Path) -> None:
    """The Output checks and Budgets sections' YAML, added to the shipped article_writer:
    the check names Dagster gets are the ones the README gives."""
    checks, budget = section("Output checks"), section("Budgets")
    spec = yaml.safe_load((EXAMPLES / "article_writer.yaml").read_text())
    spec["orchestration"] |= yaml_block(checks)["orchestration"]
    spec["orchestration"] |= yaml_block(budget)["orchestration"]
    (tmp_path / "article_writer.yaml").write_text(yaml.safe_dump(spec))
    asset = build_definitions(tmp_path).resolve_assets_def("article_writer")
    named = re.search(r"the two checks above are `(\w+)` and `(\w+)`", prose(checks))
    assert named is not None
    budget_named = re.search(r"An asset check `(\w+)`", prose(budget))
    assert budget_named is not None
    assert {key.name for key in asset.check_keys} == {*named.groups(), budget_named[1]}
    assert "one more check, `budget`" in prose(checks)
    assert {key.name for key in asset.check_keys} == {
        "article_min_length_200",
        "word_count_min_100_0",
        "budget",
    }


def test_the_readmes_other_check_names_are_the_real_ones() -> None:
    named = re.findall(r"`(\{field: [^`]+\})` is `(\w+)`", prose(section("Output checks")))
    assert len(named) == 2
    for check, name in named:
        assert OutputCheck.model_validate(yaml.safe_load(check)).name == name
