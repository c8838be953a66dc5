"""`type: agents_pipelines.WorkflowsComponent` in a dg project's defs.yaml."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pydantic
import pytest

from agents_pipelines.orchestration import build_definitions
from conftest import EXAMPLES

PYPROJECT = """\
[project]
name = "acme"
version = "0.0.1"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "acme"
"""


def make_project(root: Path, attributes: str) -> Path:
    (root / "acme" / "defs" / "llm_workflows").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "acme" / "__init__.py").write_text("")
    (root / "acme" / "defs" / "__init__.py").write_text("")
    folder = root / "acme" / "defs" / "llm_workflows"
    (folder / "defs.yaml").write_text(
        f"type: agents_pipelines.WorkflowsComponent\nattributes:\n{attributes}"
    )
    shutil.copytree(EXAMPLES, folder / "flows")
    # The examples' Python steps and tools, in the directory `dg` runs in (importable there).
    shutil.copytree(EXAMPLES.parent / "shop", root / "shop")
    return root


def load(root: Path) -> dg.Definitions:
    sys.path.insert(0, str(root))
    try:
        return dg.load_from_defs_folder(path_within_project=root)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == "acme" or m.startswith("acme.")]:
            del sys.modules[name]


def keys(defs: dg.Definitions) -> set[str]:
    return {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}


def test_component_builds_what_the_code_location_builds(tmp_path: Path) -> None:
    defs = load(make_project(tmp_path, "  path: flows\n"))
    reference = build_definitions(EXAMPLES)
    assert keys(defs) == keys(reference)
    assert {"article_writer", "release_notes", "support_triage"} <= keys(defs)
    ours = defs.resolve_assets_def("article_writer")
    theirs = reference.resolve_assets_def("article_writer")
    key = dg.AssetKey("article_writer")
    assert ours.specs_by_key[key].group_name == theirs.specs_by_key[key].group_name == "content"
    assert ours.op.config_schema.config_type.fields.keys() == {"topic"}
    assert ours.code_versions_by_key == theirs.code_versions_by_key


def test_component_group_overrides_every_asset(tmp_path: Path) -> None:
    defs = load(make_project(tmp_path, "  path: flows\n  group: llm\n"))
    graph = defs.resolve_asset_graph()
    assert {graph.get(k).group_name for k in graph.get_all_asset_keys()} == {"llm"}


# The README's dg commands, run as written (tests/test_readme.py checks they still match).
DG_COMMANDS = ("dg check yaml", "dg check defs")
DEFINITIONS = """\
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""


@pytest.mark.slow
def test_dg_check_finds_and_loads_the_component(tmp_path: Path) -> None:
    """`dg` resolves `type: agents_pipelines.WorkflowsComponent` through the package's
    `dagster_dg_cli.registry_modules` entry point, in the environment it runs in."""
    root = make_project(tmp_path, "  path: flows\n  group: llm\n")
    (root / "acme" / "definitions.py").write_text(DEFINITIONS)
    venv_bin = str(Path(sys.executable).parent)  # the project's environment, as if activated
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DAGSTER_HOME", None)
    outputs = []
    for command in DG_COMMANDS:
        done = subprocess.run(
            ["bash", "-c", command], cwd=root, env=env, capture_output=True, text=True, timeout=240
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{command} failed:\n{output}"
        outputs.append(output)
    assert "All component YAML validated successfully." in outputs[0]
    assert "All definitions loaded successfully." in outputs[1]


def test_a_typo_in_on_invalid_is_refused_as_the_component_loads(tmp_path: Path) -> None:
    """`on_invalid` is a Literal: `skp` is an error naming the allowed values, not a
    quiet "fail"."""
    with pytest.raises(Exception, match=r"defs\.yaml \(WorkflowsComponent\) \(error\)") as refused:
        load(make_project(tmp_path, "  path: flows\n  on_invalid: skp\n"))
    cause = refused.value.__cause__
    assert isinstance(cause, pydantic.ValidationError)
    assert "on_invalid\n  Input should be 'fail' or 'skip'" in str(cause)
    assert "input_value='skp'" in str(cause)
