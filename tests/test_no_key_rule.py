"""The README's one no-key rule: what a person starts by hand (`agents-pipelines run`, as
`make dev`) runs the simulated backend and says so on stderr; a backend that was chosen is
kept, and Gemini without a key fails with an error that names both ways out."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents_pipelines.cli import NO_KEY_BANNER, main
from test_tracking import linear


def test_cli_run_without_a_key_runs_simulated_and_says_so(
    tmp_path: Path, mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(linear(tmp_path)), "--input", "topic=owls"]) == 0
    out, err = capsys.readouterr()
    assert NO_KEY_BANNER in err
    assert "--backend simulated|gemini" in err
    assert "(backend: simulated, 1 node run(s))" in out


@pytest.mark.parametrize("choice", ["flag", "environment"])
def test_a_chosen_gemini_backend_without_a_key_names_both_ways_out(
    tmp_path: Path,
    mlflow_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    choice: str,
) -> None:
    args = ["run", str(linear(tmp_path)), "--input", "topic=owls"]
    if choice == "flag":
        args += ["--backend", "gemini"]
    else:
        monkeypatch.setenv("AGENTS_PIPELINES_LLM_BACKEND", "gemini")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert NO_KEY_BANNER not in err
    assert "No Gemini API key: set GOOGLE_API_KEY" in err
    assert "AGENTS_PIPELINES_LLM_BACKEND=simulated" in err
    assert "`--backend simulated`" in err
