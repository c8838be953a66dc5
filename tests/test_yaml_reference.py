"""The YAML reference (docs/reference/yaml.md) is generated from the JSON Schema: it lists
every key with its type and default, every key is described, and the committed page is the one
the schema gives. The docs name the asset checks as Dagster names them.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from agents_pipelines.orchestration import build_definitions
from agents_pipelines.spec import workflow_json_schema
from agents_pipelines.spec.models import OutputCheck
from conftest import EXAMPLES, REPO, docs_section

_spec = importlib.util.spec_from_file_location(
    "yaml_reference", REPO / "docs" / "hooks" / "yaml_reference.py"
)
assert _spec and _spec.loader
reference = importlib.util.module_from_spec(_spec)
sys.modules["yaml_reference"] = reference  # dataclasses look their module up
_spec.loader.exec_module(reference)
PAGE = (REPO / "docs" / "reference" / "yaml.md").read_text()


def test_the_shipped_schema_is_the_models_schema() -> None:
    # The page is generated from the shipped file; test_spec_validation holds it to the models.
    assert reference.schema() == workflow_json_schema()


def test_the_schema_walk_finds_keys_at_every_depth_with_their_defaults() -> None:
    keys = reference.leaf_keys()
    assert keys["schema_version"] is reference.NO_DEFAULT
    assert keys["state.fields.NAME.required"] is False
    assert keys["nodes[].map.on_item_error"] == "fail"
    assert keys["edges[].routes[].when.in"] is None
    assert keys["config.pricing.NAME.input_per_million"] is reference.NO_DEFAULT
    assert keys["orchestration.retry.jitter"] == "plus_minus"
    assert keys["orchestration.partitions.daily.timezone"] == "UTC"
    # Free-form mappings and lists of names are keys in themselves.
    assert {"orchestration.inputs", "orchestration.partitions.static", "nodes[].tools"} <= set(keys)
    # `automation: eager`, or an object: both the key and its sub-key are listed.
    assert "orchestration.automation.on_cron" in keys
    assert "orchestration.automation" in {key.path for key in reference.all_keys()}


def test_the_committed_page_is_the_one_the_schema_gives() -> None:
    assert reference.stale() is None, f"run `{reference.REGENERATE}`"


def test_every_key_is_on_the_page_with_its_type_and_default() -> None:
    for key in reference.all_keys():
        row = re.search(rf"^\| `{re.escape(key.path)}` \| (.*?) \| (.*?) \| (.*) \|$", PAGE, re.M)
        assert row, key.path
        assert row[1] == key.type
        if key.leaf and key.default not in (reference.NO_DEFAULT, None, "", [], {}):
            assert row[2].strip("`").replace(",", "") == str(_written(key.default)), key.path


def _written(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def test_every_key_is_described() -> None:
    assert reference.undocumented(reference.all_keys()) == []


def test_a_key_without_a_description_fails_the_build() -> None:
    schema = copy.deepcopy(reference.schema())
    del schema["$defs"]["RetryConfig"]["properties"]["max_retries"]["description"]
    assert reference.undocumented(reference.all_keys(schema)) == ["orchestration.retry.max_retries"]
    try:
        reference.render(schema)
    except ValueError as error:
        assert "orchestration.retry.max_retries" in str(error)
        assert "spec/models.py" in str(error)
    else:
        raise AssertionError("render() took a key with no description")


def test_a_key_its_parent_describes_needs_no_description_of_its_own() -> None:
    keys = {key.path: key for key in reference.all_keys()}
    assert keys["edges[].routes[].when.equals"].description == ""
    assert "`equals`" in keys["edges[].routes[].when"].description


# Asset check names ------------------------------------------------------------------------


def section(title: str) -> str:
    return docs_section(title)


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
