"""The whole-process peer: ``python _plain_script.py WORKFLOW.yaml``.

A plain Python script running the same graph under MLflow as one would write it by hand:
autolog, ``start_run``, ``graph.invoke``. MLflow drains its trace queue at exit.
Run as a script (not through the benchmarks package) so it imports only what it needs.
"""

import sys

import mlflow

from agents_pipelines.graph import build_graph, initial_state
from agents_pipelines.llm import Backend, chat_model_factory
from agents_pipelines.spec import load_workflow


def main() -> None:
    workflow = load_workflow(sys.argv[1])
    graph = build_graph(workflow.spec, chat_model_factory(Backend.SIMULATED))
    mlflow.set_experiment("bench")
    mlflow.langchain.autolog()
    with mlflow.start_run():
        state = graph.invoke(initial_state(workflow.spec, {}))
    print(sorted(state))


if __name__ == "__main__":
    main()
