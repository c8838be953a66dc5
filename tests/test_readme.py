"""README.md and the documentation site (docs/) run as written: every fenced block is run
here, or listed with the reason it is not, in the order a reader meets them.

A new block, or a new command in a bash block, that this file does not know fails
`test_every_block_is_run_or_listed`, so the README cannot drift from the product again.

Commands run in a copy of the repository's files (workflows, schema, dagster.yaml, deploy/,
with `.venv` linked to this checkout's), from a PATH that holds no virtual environment, as
someone who just cloned the repository types them: once without a key, and the commands whose
outcome depends on the key again with a fake key against the loopback Gemini server.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

from agents_pipelines import WorkflowsComponent, load_workflow
from agents_pipelines.testing import GeminiLoopbackServer
from conftest import FAKE_KEY, REPO, doc_pages
from test_component import DG_COMMANDS

README = REPO / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
BANNER = "NO GOOGLE_API_KEY SET: RUNNING THE *SIMULATED* LLM BACKEND"
MLFLOW_LINE = "MLflow tracing enabled"

# Shell commands the README shows and this test does not run, each with the reason.
NOT_RUN = {
    "make test": "the whole test suite, this test included: CI runs it",
    "make format": "rewrites the sources; `make test` runs the same tools read-only",
    "make bench": "the benchmarks take minutes and are never part of the test suite",
    "make docs": "`make test` builds the site the same way, so CI runs it",
    "make upgrade": "re-resolves against PyPI and rewrites uv.lock",
    "make test-latest": "resolves against PyPI and runs the whole suite in a copy: minutes",
    'git add uv.lock && git commit -m "Upgrade dependencies"': "commits to the repository",
    "deploy/celery/worker.sh celery_a": "needs Redis and PostgreSQL: tests/test_celery.py "
    "starts two workers with this script, each with a name of its own",
    "deploy/celery/worker.sh celery_b --concurrency 4": "as above",
    'docker run --rm -p 4318:4318 -p 8889:8889 -v "$PWD/deploy/otel/collector.yaml:'
    '/etc/otelcol-contrib/config.yaml" otel/opentelemetry-collector-contrib': "needs Docker "
    "and the collector image; tests/test_opentelemetry.py sends to a loopback OTLP receiver",
    "export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318": "points this shell at the "
    "collector above; tests/test_opentelemetry.py sets the same variable",
    ".venv/bin/dagster job execute -m agents_pipelines.definitions -j digest_job --tags "
    '\'{"dagster/asset_partition_range_start": "2026-10-01", '
    '"dagster/asset_partition_range_end": "2026-10-12"}\'': "the shipped workflows have no "
    "`backfill`; tests/test_partition_ranges.py::test_the_cli_runs_a_range_in_one_run runs "
    "the same command on one that has",
    ".venv/bin/agents-pipelines prompts push workflows/support_reply.yaml --alias production": (
        "writes new prompt versions to the MLflow store; tests/test_prompt_registry.py runs "
        "`prompts push --alias production` in-process and runs the YAML it prints"
    ),
    ".venv/bin/dagster dev -m agents_pipelines.definitions": "with the Celery profile it needs "
    "Redis, PostgreSQL and workers; tests/test_celery.py launches its runs through the same "
    "code location and executor, and `make dev` is run here",
}
# Run elsewhere, in the setting they need.
DELEGATED = {
    command: "tests/test_component.py::test_dg_check_finds_and_loads_the_component runs it "
    "in a dg project"
    for command in DG_COMMANDS
}
# Python blocks not run, found by a line they hold.
NOT_RUN_PYTHON: dict[str, str] = {}
# Fenced blocks that are not commands.
NOT_COMMANDS = {
    "text": "a diagram",
    "promql": "a Prometheus query: tests/test_opentelemetry.py checks the metric it names",
    "console": "sample output; test_sample_output_shows_a_documented_command checks its command",
    "yaml": "file contents: test_yaml_blocks checks the workflow example and the defs.yaml, "
    "and lists the fragments",
}
# YAML fragments, by their first key: parts of files that other tests cover.
YAML_FRAGMENTS = {
    "state": "a part of a workflow file: tests/test_map_nodes.py loads the map example",
    "orchestration": "a part of a workflow file; tests/test_orchestration.py covers each key",
    "run_launcher": "a part of a team dagster.yaml for Docker or Kubernetes, not installed here",
    "nodes": "a part of a workflow file; the shipped examples review_digest and support_reply "
    "hold these nodes, and tests/test_python_steps.py and tests/test_tool_calls.py run them; "
    "tests/test_prompt_registry.py runs registry prompts",
    "config": "a part of a workflow file; tests/test_dev_cache.py runs the development cache "
    "with these keys, tests/test_opentelemetry.py a collector named under otlp",
    "evals": "a part of a workflow file; tests/test_evals.py loads it into a workflow",
}


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int
    page: str = "README.md"


def readme_blocks() -> list[Block]:
    """The fenced blocks of the README and of every docs page, in reading order."""
    blocks = []
    for page in doc_pages():
        text = page.read_text()
        name = str(page.relative_to(REPO))
        blocks += [
            Block(match.group(1), match.group(2), text.count("\n", 0, match.start()) + 1, name)
            for match in FENCE.finditer(text)
        ]
    return blocks


def shell_commands(block: Block) -> list[str]:
    """One entry per command: continuation lines joined, comments dropped."""
    lines = block.text.replace("\\\n", " ").splitlines()
    stripped = (re.sub(r"(^|\s)#.*$", "", line).strip() for line in lines)
    return [re.sub(r"\s+", " ", line) for line in stripped if line]


@dataclass
class Clone:
    """A copy of the repository's files, as a fresh clone has them after `make install`."""

    root: Path
    env: dict[str, str]
    gemini: GeminiLoopbackServer | None  # None: no key

    def sh(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.root / ".venv" / "bin" / "python"), "-c", code],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )


Handler = Callable[[Clone, str], None]


def _fail(what: str, done: subprocess.CompletedProcess[str]) -> str:
    return f"{what} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"


def validate(clone: Clone, command: str) -> None:
    done = clone.sh(command)
    assert done.returncode == 0, _fail(command, done)
    shipped = len(list((clone.root / "workflows").glob("*.yaml")))
    assert f"{shipped} valid workflow(s), 0 invalid file(s), 0 problem(s)" in done.stdout


def cli_run(clone: Clone, command: str) -> None:
    done = clone.sh(command)
    assert done.returncode == 0, _fail(command, done)
    assert done.stdout.count(MLFLOW_LINE) == 1, done.stdout
    if clone.gemini is None:
        assert BANNER in done.stderr
        assert "(backend: simulated," in done.stdout
    else:
        assert BANNER not in done.stderr
        assert "(backend: gemini," in done.stdout
        assert clone.gemini.requests, "no request reached the loopback Gemini server"


def cli_estimate(clone: Clone, command: str) -> None:
    done = clone.sh(command)
    assert done.returncode == 0, _fail(command, done)
    assert "one run: " in done.stdout and "30 partitions: " in done.stdout, done.stdout
    if clone.gemini is None:
        assert "(input tokens: characters / 4 (no GOOGLE_API_KEY))" in done.stdout
    else:
        assert "(input tokens: Gemini countTokens)" in done.stdout
        assert clone.gemini.count_requests, "no countTokens request reached the loopback server"


CASSETTE = "tests/cassettes/triage.jsonl"  # the README's record and replay commands


def record_run(clone: Clone, command: str) -> None:
    cassette = clone.root / CASSETTE
    before = len(clone.gemini.requests) if clone.gemini else 0
    done = clone.sh(command)
    if clone.gemini is None:  # recording needs Gemini, so a key
        assert done.returncode != 0, _fail(command, done)
        _assert_names_both_ways_out(done.stdout + done.stderr)
        assert not cassette.exists()
        return
    assert done.returncode == 0, _fail(command, done)
    assert "(backend: record," in done.stdout
    text = cassette.read_text(encoding="utf-8")
    # support_triage's 3 LLM nodes and its judge
    assert len(text.splitlines()) == len(clone.gemini.requests) - before == 4
    assert FAKE_KEY not in text


def replay_run(clone: Clone, command: str) -> None:
    before = len(clone.gemini.requests) if clone.gemini else 0
    done = clone.sh(command)
    if not (clone.root / CASSETTE).exists():  # the run without a key recorded nothing
        assert done.returncode != 0, _fail(command, done)
        assert "does not exist. Record it first" in done.stdout + done.stderr
        return
    assert done.returncode == 0, _fail(command, done)
    assert "(backend: replay," in done.stdout
    assert clone.gemini is not None and len(clone.gemini.requests) == before  # no network


def cli_eval(clone: Clone, command: str) -> None:
    before = len(clone.gemini.requests) if clone.gemini else 0
    done = clone.sh(command)
    assert done.returncode == 0, _fail(command, done)  # no --min-pass-rate: no gate
    assert "5 line(s), 5 case(s), 0 skipped" in done.stdout, done.stdout
    assert "  expected.category " in done.stdout and "MLflow evaluation run: " in done.stdout
    if clone.gemini is None:
        assert BANNER in done.stderr
    else:
        assert BANNER not in done.stderr
        # 5 cases of 3 LLM nodes and 1 judge each, all through the loopback Gemini server
        assert len(clone.gemini.requests) - before == 20, done.stdout


def dagster_materialize(clone: Clone, command: str) -> None:
    done = clone.sh(command)
    if clone.gemini is None:  # a Dagster run never switches backend by itself
        assert done.returncode != 0, _fail(command, done)
        _assert_names_both_ways_out(done.stdout + done.stderr)
        expected = dg.DagsterRunStatus.FAILURE
    else:
        assert done.returncode == 0, _fail(command, done)
        assert clone.gemini.requests
        expected = dg.DagsterRunStatus.SUCCESS
    # DAGSTER_HOME=$PWD: the run is in this folder's storage, the one `make dev` serves.
    with dg.DagsterInstance.from_config(str(clone.root)) as instance:
        statuses = [record.dagster_run.status for record in instance.get_run_records()]
    assert statuses[:1] == [expected]


def cli_prune(clone: Clone, command: str) -> None:
    """The shipped workflows set no retention_days: prune reads them all, deletes nothing."""
    done = clone.sh(command)
    assert done.returncode == 0, _fail(command, done)
    lines = done.stdout.splitlines()
    shipped = len(list((clone.root / "workflows").glob("*.yaml")))
    assert lines[0].startswith(f"{shipped} workflow(s), 0 with retention_days"), done.stdout
    assert lines[-1].endswith(" 0 item(s) in all"), done.stdout


def instance_migrate(clone: Clone, command: str) -> None:
    done = clone.sh(command)
    assert done.returncode == 0, _fail(command, done)
    assert (clone.root / "history" / "runs.db").is_file()  # the instance, in $PWD


def python_api(clone: Clone, code: str) -> None:
    done = clone.python(code)
    if clone.gemini is None:
        assert done.returncode != 0, _fail("the Python API example", done)
        assert "MissingApiKeyError" in done.stderr
        _assert_names_both_ways_out(done.stderr)
    else:
        assert done.returncode == 0, _fail("the Python API example", done)
        assert "gemini" in done.stdout
        assert clone.gemini.requests


def mlflow_query(clone: Clone, code: str) -> None:
    done = clone.python(code)  # reads the runs that the commands above it recorded
    assert done.returncode == 0, _fail("the MLflow query example", done)
    # The five newest runs: the `eval` command's cases of support_triage come last.
    assert re.search(r"^support_triage 0\.\d+$", done.stdout, re.M), done.stdout


def translator_example(clone: Clone, code: str) -> None:
    # The example ends with `defs`: print what the translator put on each asset.
    check = (
        "\nfor asset in defs.resolve_asset_graph().asset_nodes:\n"
        "    if asset.key.path[0] in {'article_writer', 'release_notes'}:\n"
        "        print(asset.key.to_user_string(), sorted(k.to_user_string() for k in "
        "asset.parent_keys), sorted(asset.owners))\n"
    )
    done = clone.python(code + check)
    assert done.returncode == 0, _fail("the translator example", done)
    assert "release_notes ['raw_reviews'] ['team:insights']" in done.stdout, done.stdout


def _assert_names_both_ways_out(output: str) -> None:
    assert "No Gemini API key" in output, output
    assert "GOOGLE_API_KEY" in output
    assert "AGENTS_PIPELINES_LLM_BACKEND=simulated" in output


# Servers: started as written (a free port instead of a fixed one), checked for a healthy
# answer, then stopped with everything they started.
def make_dev(clone: Clone, command: str) -> None:
    # In the repository itself: `make install` is a no-op there, while in a copy it would
    # re-point the shared .venv at the copy. DAGSTER_HOME and the workflows are the copy's.
    home = clone.root / "dagster_home"
    home.mkdir()
    shutil.copy(clone.root / "dagster.yaml", home)
    port = _free_port()
    env = {
        **clone.env,
        "DAGSTER_HOME": str(home),
        "AGENTS_PIPELINES_WORKFLOWS_DIR": str(clone.root / "workflows"),
        "DAGSTER_PORT": str(port),
    }
    log = _serve(command, REPO, env, f"http://127.0.0.1:{port}/server_info", home / "dev.log")
    assert BANNER in log


# MLflow's job execution (a job runner and seven Huey consumers, each an interpreter that
# imports MLflow, for server-side jobs that tracking never uses) is off while the servers
# are tried (test_readme_servers took 44 s with it, 36 s without).
NO_MLFLOW_JOBS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def mlflow_ui(clone: Clone, command: str) -> None:
    port = _free_port()
    served = command.replace("--port 5000", f"--port {port}")
    assert served != command, "the README's mlflow ui command no longer says --port 5000"
    env = {**clone.env, **NO_MLFLOW_JOBS}
    _serve(served, clone.root, env, f"http://127.0.0.1:{port}/health", clone.root / "ui")


def mlflow_server(clone: Clone, command: str) -> None:
    # A SQLite store stands in for the README's PostgreSQL URL (tests/test_team_deployment.py
    # runs the server on PostgreSQL); mlflow is on no PATH here, so the script must find the
    # one in the repository's .venv.
    served = re.sub(r"postgresql://\S+", f"sqlite:///{clone.root / 'mlflow.db'}", command)
    assert served != command
    assert shutil.which("mlflow", path=clone.env["PATH"]) is None
    port = _free_port()
    env = {**clone.env, **NO_MLFLOW_JOBS, "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "1"}
    _serve(served, clone.root, env, f"http://127.0.0.1:{port}/health", clone.root / "server")


def _serve(command: str, cwd: Path, env: dict[str, str], health_url: str, log: Path) -> str:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 240
        while not _healthy(health_url):
            assert process.poll() is None, f"{command} stopped:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"{command} never answered:\n{log.read_text()}"
            time.sleep(0.25)
    finally:
        _stop_group(process)
    return log.read_text()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass
    with pytest.raises(ProcessLookupError):  # nothing it started is left running
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            os.killpg(process.pid, 0)
            time.sleep(0.5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Runner:
    handler: Handler
    key_sensitive: bool = False  # run again with a key: the outcome depends on it
    server: bool = False


COMMANDS: dict[str, Runner] = {  # a regex matching the whole command -> how to run it
    r"make dev": Runner(make_dev, server=True),
    r"\.venv/bin/agents-pipelines validate workflows/": Runner(validate),
    r"\.venv/bin/agents-pipelines run workflows/\S+\.yaml .*": Runner(cli_run, True),
    r"\.venv/bin/agents-pipelines estimate workflows/\S+\.yaml .*": Runner(cli_estimate, True),
    r"AGENTS_PIPELINES_LLM_BACKEND=record AGENTS_PIPELINES_CASSETTE=\S+ "
    r"\.venv/bin/agents-pipelines run workflows/\S+\.yaml": Runner(record_run, True),
    r"AGENTS_PIPELINES_LLM_BACKEND=replay AGENTS_PIPELINES_CASSETTE=\S+ "
    r"\.venv/bin/agents-pipelines run workflows/\S+\.yaml": Runner(replay_run, True),
    r"\.venv/bin/agents-pipelines eval workflows/\S+\.yaml --dataset \S+": Runner(cli_eval, True),
    r"DAGSTER_HOME=\$PWD \.venv/bin/dagster asset materialize .*": Runner(
        dagster_materialize, True
    ),
    r"DAGSTER_HOME=\$PWD \.venv/bin/dagster instance migrate": Runner(instance_migrate),
    r"(DAGSTER_HOME=\$PWD )?\.venv/bin/agents-pipelines prune( --dry-run)?": Runner(cli_prune),
    r"\.venv/bin/mlflow ui .*": Runner(mlflow_ui, server=True),
    r"MLFLOW_BACKEND_STORE_URI=\S+ deploy/team/mlflow-server\.sh": Runner(
        mlflow_server, server=True
    ),
}
PYTHON: dict[str, Runner] = {  # a line the block holds -> how to run it
    "result = run_workflow(workflow, {": Runner(python_api, True),
    "traces = mlflow.search_traces(": Runner(mlflow_query),
    "class TeamTranslator(WorkflowTranslator):": Runner(translator_example),
}


@dataclass(frozen=True)
class Step:
    block: Block
    text: str
    runner: Runner | None  # None: not run, for a listed reason


def plan(block: Block) -> list[Step]:
    """How each part of ``block`` is handled; an unknown one fails with where it is."""
    where = f"{block.page}:{block.line}"
    if block.language == "bash":
        return [
            Step(block, command, _command_runner(command, where))
            for command in shell_commands(block)
        ]
    if block.language == "python":
        if any(line in block.text for line in NOT_RUN_PYTHON):
            return [Step(block, block.text, None)]
        known = [runner for line, runner in PYTHON.items() if line in block.text]
        assert len(known) == 1, (
            f"{where}: a python block this test does not know how to run: add it to PYTHON "
            f"or NOT_RUN_PYTHON in tests/test_readme.py"
        )
        return [Step(block, block.text, known[0])]
    assert block.language in NOT_COMMANDS, (
        f"{where}: a ```{block.language} block: label it, and teach tests/test_readme.py "
        "to run or check it"
    )
    return [Step(block, block.text, None)]


def _command_runner(command: str, where: str) -> Runner | None:
    if command in NOT_RUN or command in DELEGATED:
        return None
    known = [runner for pattern, runner in COMMANDS.items() if re.fullmatch(pattern, command)]
    assert len(known) == 1, (
        f"{where}: `{command}` is a command this test does not know how to run: add it to "
        "COMMANDS (or, with the reason, to NOT_RUN) in tests/test_readme.py"
    )
    return known[0]


def all_steps() -> list[Step]:
    return [step for block in readme_blocks() for step in plan(block)]


def steps_to_run() -> list[Step]:
    """Each distinct command or snippet once, where a reader first meets it: the README's two
    commands are also on the docs' Getting started page."""
    seen: set[str] = set()
    steps = []
    for step in all_steps():
        if step.runner and step.text not in seen:
            seen.add(step.text)
            steps.append(step)
    return steps


def test_every_block_is_run_or_listed() -> None:
    steps = all_steps()
    run = {step.runner.handler for step in steps if step.runner}
    # Every way of running is used: a command dropped from the README drops its runner too.
    assert run == {r.handler for r in [*COMMANDS.values(), *PYTHON.values()]}
    shown = {step.text for step in steps if step.block.language == "bash"}
    assert set(NOT_RUN) <= shown, "NOT_RUN lists a command the README no longer shows"
    dg_block = [shell_commands(s.block) for s in steps if s.text in DELEGATED]
    assert dg_block[0] == list(DG_COMMANDS), "the README's dg commands are not the tested ones"


def test_a_new_block_fails_until_it_is_taught() -> None:
    with pytest.raises(AssertionError, match=r"README.md:7: `rm -rf /tmp/x` is a command"):
        plan(Block("bash", "rm -rf /tmp/x\n", 7))
    with pytest.raises(AssertionError, match="a python block this test does not know"):
        plan(Block("python", "print('new')\n", 7))
    with pytest.raises(AssertionError, match="a ``` block: label it"):
        plan(Block("", "anything\n", 7))


def test_sample_output_shows_a_documented_command() -> None:
    commands = {step.text for step in all_steps() if step.block.language == "bash"}
    for block in readme_blocks():
        if block.language == "console":
            typed = [line[2:] for line in block.text.splitlines() if line.startswith("$ ")]
            assert typed and set(typed) <= commands, block


def test_yaml_blocks(tmp_path: Path) -> None:
    """The workflow example loads as is; the defs.yaml builds a WorkflowsComponent; any other
    block is a listed fragment."""
    for block in readme_blocks():
        if block.language != "yaml":
            continue
        data = yaml.safe_load(block.text)
        if "schema_version" in data:
            (tmp_path / "schema").mkdir(exist_ok=True)
            example = tmp_path / "workflows" / "example.yaml"
            example.parent.mkdir(exist_ok=True)
            example.write_text(block.text)
            assert load_workflow(example).name == "article_writer"
        elif data.get("type") == "agents_pipelines.WorkflowsComponent":
            component = WorkflowsComponent(**data["attributes"])
            assert component.path == "workflows"
        else:
            assert next(iter(data)) in YAML_FRAGMENTS, f"{block.page}:{block.line}: {block.text}"


def _clean_path() -> str:
    """PATH without any virtual environment: the README must say `.venv/bin/`."""
    tools = ("agents-pipelines", "dagster", "mlflow")
    return os.pathsep.join(
        folder
        for folder in os.environ["PATH"].split(os.pathsep)
        if not any((Path(folder) / tool).exists() for tool in tools)
    )


@pytest.fixture
def clone(tmp_path: Path, migrated_mlflow_db: Path) -> Clone:
    root = tmp_path / "clone"
    root.mkdir()
    for folder in ("workflows", "schema", "deploy", "shop", "datasets"):
        shutil.copytree(REPO / folder, root / folder)
    for file in ("dagster.yaml", "workspace.yaml"):
        shutil.copy(REPO / file, root)
    (root / ".venv").symlink_to(REPO / ".venv")
    # MLflow would create and migrate this store on first use; the copy saves seconds.
    shutil.copy(migrated_mlflow_db, root / "mlflow.db")
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DAGSTER_HOME", "VIRTUAL_ENV", "MLFLOW_TRACKING_URI", "PYTEST_CURRENT_TEST")
    }
    env.update(PATH=_clean_path(), PWD=str(root))
    return Clone(root, env, None)


@pytest.fixture
def keyed(clone: Clone) -> Iterator[Clone]:
    with GeminiLoopbackServer() as server:
        clone.env.update(GOOGLE_API_KEY=FAKE_KEY, GOOGLE_GEMINI_BASE_URL=server.base_url)
        clone.gemini = server
        yield clone


# A few seconds each on an idle machine; generous bounds for a loaded one.
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_readme_commands_without_a_key(clone: Clone) -> None:
    for step in steps_to_run():
        if step.runner and not step.runner.server:
            step.runner.handler(clone, step.text)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_readme_commands_with_a_key(keyed: Clone) -> None:
    for step in steps_to_run():
        if step.runner and step.runner.key_sensitive:
            step.runner.handler(keyed, step.text)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_readme_servers(clone: Clone) -> None:
    for step in steps_to_run():
        if step.runner and step.runner.server:
            step.runner.handler(clone, step.text)
