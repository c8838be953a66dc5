"""``agents-pipelines eval WORKFLOW --dataset cases.jsonl``: a workflow over a dataset.

- ``dataset``: the JSON Lines cases, each line checked (a malformed one is reported with its
  number and skipped);
- ``scorers``: an exact-match scorer per ``expected`` field, and the workflow's ``evals:``;
- ``cases``: each case a ``run_workflow``, all under one ``mlflow.genai.evaluate`` run
  (tracking/dataset_evaluation.py);
- ``report`` and ``cli``: the table, the command and its exit codes.
"""

from agents_pipelines.dataset_eval.cases import EvalReport, evaluate_dataset
from agents_pipelines.dataset_eval.dataset import read_dataset

__all__ = ["EvalReport", "evaluate_dataset", "read_dataset"]
