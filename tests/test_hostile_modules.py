"""Step and tool modules that exit, end the process, raise anything or print as they import:
`validate` and the code location report each as a finding with file:line and go on to the
other files (issue 20, items 1 and 11)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agents_pipelines.spec.python_objects import ParameterInfo
from agents_pipelines.spec.python_refs import RefError, code_sha256, import_ref
from agents_pipelines.spec.ref_probe import RefProbe
from conftest import DAGSTER, LINEAR, write

# Module bodies that each, on import, end a process that imports them in-process.
ENDINGS = {
    "exit_zero": "import sys\nsys.exit(0)\n",
    "exit_three": "import sys\nsys.exit(3)\n",
    "os_exit": "import os\nos._exit(0)\n",
    "base_exception": "class Odd(BaseException):\n    pass\n\nraise Odd('odd')\n",
    "interrupt": "raise KeyboardInterrupt\n",
}
# What `validate` says of each: the module's own line where it raised or exited.
SAID = {
    "exit_zero": r"calls sys\.exit\(0\) while it imports \(hostile_exit_zero\.py, line 2\)",
    "exit_three": r"calls sys\.exit\(3\) while it imports \(hostile_exit_three\.py, line 2\)",
    "os_exit": r"ends the process while it imports \(exit status 0, with no exception",
    "base_exception": r"does not import: Odd: odd \(hostile_base_exception\.py, line 4\)",
    "interrupt": r"does not import: KeyboardInterrupt \(hostile_interrupt\.py, line 1\)",
}
STEP = "def step(topic: str) -> dict:\n    return {'summary': topic}\n"
PRINTS = "print('printed while importing')\n" + STEP


def step_workflow(name: str, ref: str) -> str:
    return LINEAR.replace("{name: linear}", f"{{name: {name}}}").replace(
        '    prompt: "Summarize {topic}."\n', f"    function: {ref}\n"
    )


def tool_workflow(name: str, ref: str) -> str:
    return LINEAR.replace("{name: linear}", f"{{name: {name}}}").replace(
        "    outputs: [summary]\n", f"    tools: [{ref}]\n    outputs: [summary]\n"
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder: hostile modules beside workflows/, where each names one of them
    (as a step, or as a tool for `os_exit`), then a broken file and two valid ones."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    for i, (name, body) in enumerate(ENDINGS.items()):
        (tmp_path / f"hostile_{name}.py").write_text(body + STEP, encoding="utf-8")
        make = tool_workflow if name == "os_exit" else step_workflow
        write(folder, make(f"w{i}", f"hostile_{name}:step"), f"a{i}_{name}.yaml")
    (tmp_path / "noisy.py").write_text(PRINTS, encoding="utf-8")
    write(folder, step_workflow("noisy", "noisy:step"), "m_noisy.yaml")
    write(folder, LINEAR, "m_valid.yaml")
    write(folder, "flow: [", "z_broken.yaml")
    return tmp_path


def test_validate_reports_every_module_that_ends_it_and_goes_on(project: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agents_pipelines.cli", "validate", "workflows"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    for i, name in enumerate(ENDINGS):
        field, at = ("tools[0]", "10:13") if name == "os_exit" else ("function", "9:5")
        (line,) = [line for line in lines if line.startswith(f"workflows/a{i}_{name}.yaml:")]
        assert line.startswith(f"workflows/a{i}_{name}.yaml:{at}: ")
        assert f": nodes[0].{field}: cannot import `hostile_{name}:step`: " in line
        assert re.search(SAID[name], line), line
        assert f"Fix: make `hostile_{name}` import cleanly" in line
    assert lines[-2].startswith("workflows/z_broken.yaml:1:8: YAML syntax error")
    assert lines[-1] == "2 valid workflow(s), 6 invalid file(s), 6 problem(s)"
    # A print at import goes to stderr: stdout is the report alone (item 11).
    assert "printed while importing" in done.stderr
    assert "printed while importing" not in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_a_print_at_import_stays_out_of_the_report(tmp_path: Path) -> None:
    """Item 11: what a module prints as it imports goes to stderr, not into `validate`'s
    report on stdout (which a CI step may read)."""
    (tmp_path / "noisy.py").write_text(PRINTS, encoding="utf-8")
    write(tmp_path, step_workflow("noisy", "noisy:step"), "noisy.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "agents_pipelines.cli", "validate", "noisy.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1 valid workflow(s), 0 invalid file(s), 0 problem(s)\n"
    assert "printed while importing" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("on_invalid", ["skip", "fail"])
def test_dagster_definitions_validate_reports_a_module_that_ends_it(
    project: Path, on_invalid: str
) -> None:
    (project / "dagster_home").mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(project / "dagster_home"),
        "AGENTS_PIPELINES_LLM_BACKEND": "simulated",
        "AGENTS_PIPELINES_WORKFLOWS_DIR": "workflows",
        "AGENTS_PIPELINES_INVALID_WORKFLOWS": on_invalid,
    }
    command = [str(DAGSTER), "definitions", "validate", "-m", "agents_pipelines.definitions"]
    done = subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    os_exit = (
        "workflows/a2_os_exit.yaml:10:13: nodes[0].tools[0]: cannot import "
        "`hostile_os_exit:step`: module `hostile_os_exit` ends the process while it imports"
    )
    assert os_exit in output
    if on_invalid == "skip":
        assert done.returncode == 0, output[-3000:]
        assert output.count("Skipped invalid workflow: ") == 6
        assert "Validation successful for code location agents_pipelines.definitions" in output
    else:
        assert done.returncode != 0
        assert "Validation failed for code location agents_pipelines.definitions" in output
        assert "workflows/a0_exit_zero.yaml:9:5: nodes[0].function: " in output


def test_a_run_that_imports_an_exiting_module_gets_a_ref_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process (the run imports the step it runs), SystemExit becomes a RefError too."""
    (tmp_path / "exits_in_run.py").write_text(ENDINGS["exit_three"] + STEP, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RefError, match=r"calls sys\.exit\(3\) while it imports"):
        import_ref("exits_in_run:step")


def test_a_module_whose_import_never_ends_is_reported_and_the_probe_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "endless.py").write_text("import time\nwhile True:\n    time.sleep(1)\n")
    (tmp_path / "fine.py").write_text(STEP, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = RefProbe(import_timeout_s=1)
    with pytest.raises(RefError, match=r"module `endless` did not finish importing in 1 s"):
        probe.describe("endless:step")
    assert probe.describe("fine:step").parameters == (
        ParameterInfo("topic", "POSITIONAL_OR_KEYWORD", has_default=False, annotated=True),
    )
    assert probe.close() == 0


def test_threads_and_atexit_handlers_of_a_module_do_not_keep_the_child_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A normal exit would wait for the module's thread and run its atexit handler, which
    never end: the child, killed after the grace period, would report SIGKILL (-9)."""
    source = (
        "import atexit, threading\n"
        "threading.Thread(target=threading.Event().wait).start()\n"
        "atexit.register(threading.Event().wait)\n" + STEP
    )
    (tmp_path / "lingering.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = RefProbe(import_timeout_s=30)  # the grace the child gets to exit by itself
    assert probe.describe("lingering:step").is_function
    assert probe.close() == 0


def test_a_module_getattr_that_exits_is_a_finding_in_the_child_and_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attribute is read in the child too: a module-level __getattr__ may exit."""
    source = "import sys\n\ndef __getattr__(name):\n    sys.exit(5)\n"
    (tmp_path / "exits_on_getattr.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = RefProbe()
    with pytest.raises(RefError, match=r"raised SystemExit for `step`: 5"):
        probe.describe("exits_on_getattr:step")
    assert probe.describe("exits_on_getattr:__name__").type_name == "str"
    assert probe.close() == 0
    with pytest.raises(RefError, match=r"raised SystemExit for `step`: 5"):
        import_ref("exits_on_getattr:step")


def test_the_code_version_reads_a_module_without_importing_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A workflow's version hashes the step module's source (issue 19, item 8); finding a
    dotted module's file must not import its package, whose import may exit."""
    package = tmp_path / "exiting_package"
    package.mkdir()
    (package / "__init__.py").write_text(ENDINGS["exit_three"], encoding="utf-8")
    (package / "steps.py").write_text(STEP, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    first = code_sha256(["exiting_package.steps:step"])
    (package / "steps.py").write_text(STEP + "# changed\n", encoding="utf-8")
    assert first is not None and code_sha256(["exiting_package.steps:step"]) not in (None, first)
    assert "exiting_package" not in sys.modules
