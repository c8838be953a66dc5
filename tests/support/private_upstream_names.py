"""Finds the places outside ``agents_pipelines._compat`` that touch a private or undocumented
name of an upstream library (tests/test_compat.py fails on any).

Found by reading the source (``ast``), per module:
- an import from an upstream module that is not on PUBLIC_MODULES, or of a name that starts
  with ``_``, or of a name on PRIVATE_NAMES;
- an attribute that starts with ``_`` (not a dunder) and is defined nowhere in our own code,
  or one on PRIVATE_ATTRIBUTES on anything but ``self``, or one on UNDOCUMENTED_ATTRIBUTES
  that this module does not set on ``self`` itself;
- ``getattr``/``setattr``/``hasattr`` of a ``_name`` string, and strings that name an
  upstream detail (PRIVATE_STRINGS).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("src/agents_pipelines", "shop", "scripts", "benchmarks")
COMPAT = REPO / "src" / "agents_pipelines" / "_compat"

# The upstream modules whose public API we may import anywhere: the documented ones. A new
# upstream import goes here only if its module is in the library's API reference; otherwise
# it goes into a hook of agents_pipelines._compat.
UPSTREAM = re.compile(
    r"^(dagster\w*|mlflow|langgraph|langchain\w*|google|opentelemetry|httpx2?|httpcore2?)(\.|$)"
)
PUBLIC_MODULES = frozenset(
    {
        "dagster",
        "dagster_celery",
        "dagster_postgres",
        "mlflow",
        "mlflow.entities",
        "mlflow.exceptions",
        "mlflow.genai",
        "mlflow.genai.scorers",
        "mlflow.langchain",
        "mlflow.tracing",
        "langgraph.checkpoint.base",
        "langgraph.checkpoint.postgres",
        "langgraph.checkpoint.serde.encrypted",  # EncryptedSerializer, in the API reference
        "langgraph.checkpoint.sqlite",
        "langgraph.errors",
        "langgraph.graph",
        "langgraph.graph.state",
        "langgraph.runtime",
        "langgraph.types",
        "langchain_core.caches",
        "langchain_core.callbacks",
        "langchain_core.language_models",
        "langchain_core.language_models.base",
        "langchain_core.messages",
        "langchain_core.messages.ai",
        "langchain_core.output_parsers",
        "langchain_core.outputs",
        "langchain_core.runnables",
        "langchain_core.runnables.config",
        "langchain_core.tools",
        "langchain_core.utils.function_calling",
        "langchain_google_genai",
        "google.genai",
        "google.genai.types",
        # OpenTelemetry's API reference (opentelemetry-python.readthedocs.io): the API and
        # SDK modules, the OTLP exporters, and the OTLP messages opentelemetry-proto ships.
        "opentelemetry.metrics",
        "opentelemetry.sdk.metrics",
        "opentelemetry.sdk.metrics.export",
        "opentelemetry.sdk.resources",
        "opentelemetry.sdk.trace",
        "opentelemetry.sdk.trace.export",
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "opentelemetry.exporter.otlp.proto.http.metric_exporter",
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
        "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
        "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2",
        "opentelemetry.proto.common.v1.common_pb2",
        "opentelemetry.proto.metrics.v1.metrics_pb2",
    }
)
# Public-looking names that are not documented API (each has a hook in _compat).
PRIVATE_NAMES = frozenset({"var_child_runnable_config", "set_config_context"})
# Upstream private attributes that our own classes also happen to define: flagged on
# anything but ``self``.
PRIVATE_ATTRIBUTES = frozenset(
    {"_client", "_span", "_events", "_attributes", "_queue", "_async_queue"}
)
# LangGraph savers' undocumented attributes: allowed only in a module whose own class sets
# ``self.<name>`` (attempt journals have a ``conn`` of their own).
UNDOCUMENTED_ATTRIBUTES = frozenset({"conn", "lock", "serde"})
# Upstream private methods that a subclass of ours would override (each has a hook).
PRIVATE_METHODS = frozenset({"_upload_trace_data", "_claim_concurrency_slot"})
PRIVATE_STRINGS = re.compile(
    r"stream_channels|model_catalog|^httpx2$|^(google_genai|dagster|mlflow|langgraph|langchain\w*)\.(\w+\.)*_\w"
)
# The standard library's documented underscore names.
STDLIB_UNDERSCORE = frozenset({"_replace", "_make", "_asdict", "_fields", "_exit", "_getframe"})
REFLECTION = frozenset({"getattr", "setattr", "hasattr", "delattr"})


def python_files(*, inside_compat: bool = False) -> list[Path]:
    files = [p for root in SOURCES for p in sorted((REPO / root).rglob("*.py"))]
    return [p for p in files if (COMPAT in p.parents) == inside_compat]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def our_names() -> frozenset[str]:
    """Every ``_name`` our own code (outside _compat) defines: functions, classes, attributes
    assigned on anything, module-level names, keyword arguments."""
    names: set[str] = set()
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return frozenset(n for n in names if _private(n))


def _self_attributes(tree: ast.AST) -> set[str]:
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.ctx, ast.Store)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    }


def _import_findings(node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if UPSTREAM.match(alias.name) and alias.name not in PUBLIC_MODULES:
                yield f"import {alias.name}"
        return
    module = node.module or ""
    if node.level or not UPSTREAM.match(module):
        return
    if module not in PUBLIC_MODULES:
        yield f"from {module} import ..."
    for alias in node.names:
        if _private(alias.name) or alias.name in PRIVATE_NAMES:
            yield f"from {module} import {alias.name}"


def findings(path: Path, ours: frozenset[str]) -> Iterator[str]:
    tree = ast.parse(path.read_text("utf-8"))
    own = _self_attributes(tree)
    docstrings = _docstrings(tree)
    where = path.relative_to(REPO) if REPO in path.parents else path
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node.name in PRIVATE_METHODS:
                yield f"{where}:{line}: def {node.name}"
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for found in _import_findings(node):
                yield f"{where}:{line}: {found}"
        elif isinstance(node, ast.Attribute):
            on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            attr = node.attr
            if _private(attr) and attr not in STDLIB_UNDERSCORE:
                upstream = attr in PRIVATE_ATTRIBUTES | PRIVATE_METHODS and not on_self
                if attr not in ours or upstream:
                    yield f"{where}:{line}: .{attr}"
            elif attr in UNDOCUMENTED_ATTRIBUTES and not on_self and attr not in own:
                yield f"{where}:{line}: .{attr}"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in REFLECTION and len(node.args) >= 2:
                name = node.args[1]
                if isinstance(name, ast.Constant) and _private(str(name.value)):
                    yield f'{where}:{line}: {node.func.id}(..., "{name.value}")'
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if PRIVATE_STRINGS.search(node.value) and id(node) not in docstrings:
                yield f"{where}:{line}: {node.value!r}"
        elif isinstance(node, ast.Name) and node.id in PRIVATE_NAMES:
            yield f"{where}:{line}: {node.id}"


def _docstrings(tree: ast.AST) -> set[int]:
    """The docstrings' nodes (by id): prose may name an upstream detail."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def all_findings() -> list[str]:
    ours = our_names()
    return [found for path in python_files() for found in findings(path, ours)]


if __name__ == "__main__":
    print("\n".join(all_findings()) or "none")
