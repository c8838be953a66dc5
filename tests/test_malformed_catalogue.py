"""A catalogue of malformed workflow files: each gives one clear error, never a traceback.

Every file in tests/malformed/ begins with comment lines that say what it must give:

    # expect: REGEX   re.search()ed in str() of the first ConfigIssue
    # issues: N       how many issues the file gives (default 1; `*` for any number)
    # line: N         the first issue's line; `none` for a problem of the whole file.
                      Without it the issue must still carry a line.
    # note: TEXT      a remark for readers (optional)

Files that cannot sensibly be committed (over 1 MB, not UTF-8, control bytes, thousands of
brackets) are built into tmp_path by GENERATED below and checked the same way.

A case that fails today because of a bug in src/ is marked
``xfail(strict=True, raises=<the check that fails>)``: it fails for that reason only, and
once the bug is fixed it passes, strict xfail fails the run, and the mark must go.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents_pipelines.cli import main
from agents_pipelines.errors import WorkflowConfigError
from agents_pipelines.orchestration import build_definitions
from agents_pipelines.spec import load_workflow
from agents_pipelines.spec.files import UnreadableFileError, read_limited
from conftest import LINEAR

MALFORMED = Path(__file__).resolve().parent / "malformed"
GOOGLE_KEY = re.compile(r"AIza[0-9A-Za-z_\-]{35}")
_HEADER = re.compile(r"^# (expect|issues|line|note): (.*)$")


class CaseFailure(AssertionError):
    """One catalogue check failed; the subclass says which (xfail marks name it)."""


class LibraryTraceback(CaseFailure):
    """Loading raised something other than WorkflowConfigError."""


class NotRejected(CaseFailure):
    """The file loaded as a valid workflow."""


class KeyEchoed(CaseFailure):
    """A message repeats a literal Google API key from the file."""


class WrongFile(CaseFailure):
    """An issue does not start with the file's path."""


class WrongLine(CaseFailure):
    """The first issue has no line, or not the expected one."""


class WrongIssueCount(CaseFailure):
    """The file gives more (or fewer) issues than the one clear error expected."""


class NoFix(CaseFailure):
    """An issue has no `Fix:` part."""


class UnexpectedMessage(CaseFailure):
    """The first issue does not say what the case expects."""


@dataclass(frozen=True)
class Case:
    name: str
    expect: str
    issues: int | None = 1  # None: any number
    line: int | str | None = "any"  # "any": some line; None: no line (whole-file problem)

    @classmethod
    def parse(cls, path: Path) -> Case:
        header = {}
        for text in path.read_text(encoding="utf-8").splitlines():
            if not (match := _HEADER.match(text)):
                break
            header[match[1]] = match[2].strip()
        assert "expect" in header, f"{path.name} must begin with `# expect: <regex>`"
        issues = header.get("issues", "1")
        line = header.get("line", "any")
        return cls(
            path.stem,
            header["expect"],
            None if issues == "*" else int(issues),
            None if line == "none" else (line if line == "any" else int(line)),
        )


def check(path: Path, case: Case) -> None:
    """Load ``path``; raise the CaseFailure subclass of the first check that fails."""
    try:
        load_workflow(path)
    except WorkflowConfigError as exc:
        error = exc
    except Exception as exc:
        raise LibraryTraceback(f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    else:
        raise NotRejected(f"{path.name} loaded as a valid workflow")
    messages = [str(error), *map(str, error.issues)]
    if any(GOOGLE_KEY.search(message) for message in messages):
        echoed = [GOOGLE_KEY.sub("AIza<the key>", m) for m in messages if GOOGLE_KEY.search(m)]
        raise KeyEchoed(echoed)
    if any("Traceback" in message for message in messages):
        raise UnexpectedMessage(messages)
    shown = [str(issue) for issue in error.issues]
    if not error.issues or not all(s.startswith(f"{path}:") for s in shown):
        raise WrongFile(shown)
    first = error.issues[0]
    if case.line == "any" and first.line is None:
        raise WrongLine(f"no line in: {shown[0]}")
    if case.line != "any" and first.line != case.line:
        raise WrongLine(f"expected line {case.line}, got {first.line} in: {shown[0]}")
    if case.issues is not None and len(error.issues) != case.issues:
        raise WrongIssueCount(f"expected {case.issues} issue(s), got {shown}")
    if missing := [s for s in shown if " Fix: " not in s]:
        raise NoFix(missing)
    if not re.search(case.expect, shown[0]):
        raise UnexpectedMessage(f"{case.expect!r} not in: {shown[0]}")


# Bugs in src/ that the catalogue finds today: case name -> (failing check, reason).
# Empty: every case passes. A new bug gets an entry here until src/ is fixed.
KNOWN_BUGS: dict[str, tuple[type[CaseFailure], str]] = {}


def _param(name: str, *values: object) -> object:
    if name not in KNOWN_BUGS:
        return pytest.param(*values, id=name)
    raises, reason = KNOWN_BUGS[name]
    return pytest.param(
        *values, id=name, marks=pytest.mark.xfail(strict=True, raises=raises, reason=reason)
    )


COMMITTED = sorted(MALFORMED.glob("*.y*ml"))
assert COMMITTED, f"no malformed workflow files in {MALFORMED}"


@pytest.mark.parametrize("path", [_param(p.stem, p) for p in COMMITTED])
def test_malformed_file_gives_one_clear_error(path: Path) -> None:
    check(path, Case.parse(path))


# ---------------------------------------------------------------------------------------
# Generated at test time: too big to commit, or bytes an editor would mangle.


def _with_prompt(prompt: str) -> str:
    return LINEAR.replace('"Summarize {topic}."', prompt)


GENERATED: dict[str, tuple[Callable[[], bytes], Case]] = {
    "g01_empty_file": (lambda: b"", Case("", r"the file is empty\. Fix: ", line=None)),
    "g02_whitespace_only": (
        lambda: b"   \n\n  \n",
        Case("", r"the file is empty\. Fix: ", line=None),
    ),
    "g03_huge_file": (
        lambda: (LINEAR + "# padding padding padding padding\n" * 33_000).encode(),
        Case(
            "",
            r"the file is 1,\d{3},\d{3} bytes, over the 1,000,000-byte limit\. Fix: split it",
            line=None,
        ),
    ),
    "g04_huge_prompt": (
        lambda: _with_prompt('"' + "Summarize {topic}. " * 60_000 + '"').encode(),
        Case("", r"over the 1,000,000-byte limit", line=None),
    ),
    "g05_latin1_bytes": (
        lambda: LINEAR.replace("{name: linear}", "{name: linear, description: café}").encode(
            "latin-1"
        ),
        Case("", r"byte 0xe9 at offset \d+ is not UTF-8\. Fix: save the file as UTF-8", line=2),
    ),
    "g06_utf16_file": (
        lambda: LINEAR.encode("utf-16"),
        Case("", r"byte 0xff at offset 0 is not UTF-8\. Fix: save the file as UTF-8", line=1),
    ),
    "g07_nul_byte_in_prompt": (
        lambda: _with_prompt('"Summarize {topic}.\x00"').encode(),
        Case("", r"(?i)character|byte", line=9),
    ),
    "g08_terminal_escape_in_prompt": (
        lambda: _with_prompt('"Summarize \x1b[1m{topic}\x1b[0m."').encode(),
        Case("", r"(?i)character|byte", line=9),
    ),
    "g09_nested_flow_sequences": (
        lambda: ("[" * 1_000 + "]" * 1_000 + "\n").encode(),
        Case("", r"nests deeper than 40 levels", line=1),
    ),
    "g10_nested_block_mappings": (
        lambda: "".join("  " * i + f"k{i}:\n" for i in range(600)).encode(),
        Case("", r"nests deeper than 40 levels"),
    ),
    "g11_5000_digit_integer": (
        lambda: LINEAR.replace("{topic: cats}", "{topic: " + "9" * 5_000 + "}").encode(),
        Case(
            "",
            r"orchestration\.inputs\.topic: the value `9{20}…` reads as int in YAML, but is "
            r"not a valid one \(Exceeds the limit \(4300 digits\) for integer string conversion",
            line=15,
        ),
    ),
    "g12_impossible_date": (
        lambda: LINEAR.replace("{topic: cats}", "{topic: 2026-02-30}").encode(),
        Case("", r"reads as timestamp in YAML, but is not a valid one \(day is out of", line=15),
    ),
}


def _generate(directory: Path, name: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_bytes(GENERATED[name][0]())
    return path


@pytest.mark.parametrize("name", [_param(name, name) for name in GENERATED])
def test_generated_malformed_file_gives_one_clear_error(name: str, tmp_path: Path) -> None:
    check(_generate(tmp_path, name), GENERATED[name][1])


# ---------------------------------------------------------------------------------------


def test_the_catalogue_holds_at_least_40_cases() -> None:
    assert len(COMMITTED) >= 40, [p.name for p in COMMITTED]
    assert len(COMMITTED) + len(GENERATED) >= 50
    names = {p.stem for p in COMMITTED} | set(GENERATED)
    assert not set(KNOWN_BUGS) - names, "KNOWN_BUGS names a case that does not exist"
    numbers = [p.name.split("_")[0] for p in COMMITTED]
    assert all(re.fullmatch(r"\d{2,3}", n) for n in numbers) and len(set(numbers)) == len(numbers)


def _accepted_today(names: list[str]) -> set[str]:
    return {n for n in names if KNOWN_BUGS.get(n, (None,))[0] is NotRejected}


def test_validate_cli_lists_every_malformed_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(MALFORMED)]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = out.splitlines()
    accepted = _accepted_today([p.stem for p in COMMITTED])
    for path in COMMITTED:
        if path.stem not in accepted:
            assert any(line.startswith(f"{path}:") for line in lines), path.name
    rejected = len(COMMITTED) - len(accepted)
    assert re.search(
        rf"^{len(accepted)} valid workflow\(s\), {rejected} invalid file\(s\)", out, re.M
    )


def test_validate_cli_lists_generated_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crashing = {n for n in GENERATED if KNOWN_BUGS.get(n, (None,))[0] is LibraryTraceback}
    paths = [_generate(tmp_path, name) for name in GENERATED if name not in crashing]
    assert main(["validate", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    for path in paths:
        assert any(line.startswith(f"{path}:") for line in out.splitlines()), path.name
    assert f"0 valid workflow(s), {len(paths)} invalid file(s)" in out


# Files that make PyYAML itself raise (ReaderError, RecursionError) unless the loader
# guards against them.
CRASHING_PYYAML = (
    "g07_nul_byte_in_prompt",
    "g08_terminal_escape_in_prompt",
    "g09_nested_flow_sequences",
    "g10_nested_block_mappings",
    "g11_5000_digit_integer",
    "g12_impossible_date",
)


@pytest.mark.parametrize("name", [_param(n, n) for n in CRASHING_PYYAML])
def test_validate_cli_survives_files_that_crash_the_loader(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _generate(tmp_path, name)
    try:
        code = main(["validate", str(tmp_path)])
    except Exception as exc:
        raise LibraryTraceback(f"{type(exc).__name__} escaped from `validate`") from exc
    assert code == 1
    assert capsys.readouterr().out.startswith(f"{path}")


# ---------------------------------------------------------------------------------------
# Paths that are not small regular files: refused by a stat, before any read.


def _load_error(path: Path) -> str:
    with pytest.raises(WorkflowConfigError) as caught:
        load_workflow(path)
    (issue,) = caught.value.issues
    return str(issue)


@pytest.fixture
def workflows(tmp_path: Path) -> Path:
    """A workflows folder with one valid file, linear.yaml."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "linear.yaml").write_text(LINEAR, encoding="utf-8")
    return folder


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_fifo_named_like_a_workflow_does_not_hang_validate(workflows: Path) -> None:
    os.mkfifo(workflows / "x.yaml")
    # A subprocess: were the FIFO opened for reading, it would wait for a writer forever.
    done = subprocess.run(
        [sys.executable, "-m", "agents_pipelines.cli", "validate", str(workflows)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        f"{workflows / 'x.yaml'}: it is a named pipe (FIFO), not a regular file. "
        "Fix: replace it with a regular file, or remove it",
        "1 valid workflow(s), 1 invalid file(s), 1 problem(s)",
    ]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_fifo_in_the_code_location_fails_it_or_is_skipped(workflows: Path) -> None:
    os.mkfifo(workflows / "x.yaml")
    with pytest.raises(WorkflowConfigError, match=r"x\.yaml: it is a named pipe \(FIFO\)"):
        build_definitions(workflows)
    defs = build_definitions(workflows, on_invalid="skip")
    assert [key.to_user_string() for key in defs.resolve_all_asset_keys()] == ["linear"]


def test_a_folder_named_like_a_workflow_is_refused(workflows: Path) -> None:
    (workflows / "x.yaml").mkdir()
    assert _load_error(workflows / "x.yaml").endswith(
        "x.yaml: it is a folder, not a regular file. Fix: replace it with a regular file, "
        "or remove it"
    )


def test_a_1_gb_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as file:
        file.truncate(2**30)  # sparse: no disk used
    tracemalloc.start()
    try:
        message = _load_error(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "the file is 1,073,741,824 bytes, over the 1,000,000-byte limit" in message
    assert peak < 50_000_000  # reading it whole took 1 GB


def test_a_file_longer_than_its_stat_is_cut_at_the_limit() -> None:
    """/proc files stat as 0 bytes; the read stops at limit + 1 all the same."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs Linux /proc")
    with pytest.raises(UnreadableFileError, match="over the 100-byte limit"):
        read_limited(maps, limit=100)


def test_a_symlink_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    assert "a.yaml: cannot read the file (Too many levels of symbolic links)" in _load_error(
        tmp_path / "a.yaml"
    )


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_an_unreadable_file_is_refused(workflows: Path) -> None:
    # Root reads any file (CI runs as root), so the loader runs without the capabilities
    # that let it, as a deployment's service account would (setpriv is in util-linux).
    (workflows / "linear.yaml").chmod(0)
    code = (
        "from agents_pipelines.errors import WorkflowConfigError\n"
        "from agents_pipelines.spec import load_workflow\n"
        "try:\n"
        f"    load_workflow({str(workflows / 'linear.yaml')!r})\n"
        "except WorkflowConfigError as error:\n"
        "    print(error.issues[0])\n"
    )
    without_override = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    command = [*(without_override if os.geteuid() == 0 else []), sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "linear.yaml: cannot read the file (Permission denied)" in done.stdout


# ---------------------------------------------------------------------------------------
# The `agents-pipelines validate` command, as a CI step runs it, on the cases of issue 20
# (duplicate tool names, partition bounds and time zones).

ISSUE_20 = [p for p in COMMITTED if p.name[:3] in {"128", "129", *map(str, range(152, 160))}]


def test_validate_command_refuses_duplicate_tools_and_partitions_out_of_bounds() -> None:
    assert len(ISSUE_20) == 10, [p.name for p in ISSUE_20]
    done = subprocess.run(
        [sys.executable, "-m", "agents_pipelines.cli", "validate", *map(str, ISSUE_20)],
        cwd=MALFORMED.parents[1],  # where shop/ is, as the code location runs
        env={**os.environ, "PYTHONPATH": str(MALFORMED.parent / "support")},  # catalogue_steps
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    *found, summary = done.stdout.splitlines()
    assert summary == "0 valid workflow(s), 10 invalid file(s), 10 problem(s)"
    for path, line in zip(ISSUE_20, found, strict=True):
        case = Case.parse(path)
        assert line.startswith(f"{path}:{case.line}:"), line
        assert re.search(case.expect, line), line
