"""Evals: LLM judges and rules run on a workflow's final state (the `evals:` of its file).

``evaluate(workflow, state, ...)`` gives one ``Verdict`` per eval. ``run_workflow`` runs
them after every run, inside its trace and ledger; the Dagster asset turns each verdict
into an asset check, and tracking logs each as an MLflow assessment on the run's trace.
"""

from agents_pipelines.state_evals.evaluate_state import evaluate
from agents_pipelines.state_evals.verdict import Verdict

__all__ = ["Verdict", "evaluate"]
