"""The table ``agents-pipelines eval`` prints: pass rate per scorer and overall, cost and
tokens in total and per case, the slowest cases, the failed cases and the skipped lines."""

from __future__ import annotations

from agents_pipelines.dataset_eval.cases import CaseResult, EvalReport

__all__ = ["SLOWEST", "render_report"]

SLOWEST = 3  # cases listed by duration


def render_report(report: EvalReport) -> str:
    dataset = report.dataset
    lines = [
        f"Evaluation of {report.workflow} over {dataset.path}: {dataset.lines} line(s), "
        f"{len(report.results)} case(s), {len(dataset.problems)} skipped",
        f"  {'scorer':<32} {'passed':>7} {'of':>5}  pass rate",
    ]
    for name in report.scorers:
        passed, given = report.scorer_counts(name)
        lines.append(_rate_row(name, passed, given))
    scored = report.scored
    lines.append(_rate_row("all (case pass rate)", sum(r.passed for r in scored), len(scored)))
    lines += _spend(report.results)
    lines += _slowest(report.results)
    lines += [f"  failed: {_failure(r)}" for r in report.results if r.scored and not r.passed]
    lines += [f"  skipped: {problem}" for problem in dataset.problems]
    if report.run_url:
        lines.append(f"  MLflow evaluation run: {report.run_url}")
    return "\n".join(lines)


def _rate_row(name: str, passed: int, given: int) -> str:
    rate = f"{passed / given:.1%}" if given else "n/a"
    return f"  {name:<32} {passed:>7} {given:>5}  {rate}"


def _spend(results: tuple[CaseResult, ...]) -> list[str]:
    cost = sum(r.cost_usd for r in results)
    tokens = sum(r.tokens for r in results)
    count = max(len(results), 1)
    lines = [
        f"  cost: ${cost:.6f} USD total, ${cost / count:.6f} per case",
        f"  tokens: {tokens} total, {tokens / count:.0f} per case",
    ]
    if judged := sum(r.eval_cost_usd for r in results):
        lines.append(f"  judges: ${judged:.6f} USD (apart from the cost above)")
    return lines


def _slowest(results: tuple[CaseResult, ...]) -> list[str]:
    slowest = sorted(results, key=lambda r: r.duration_s, reverse=True)[:SLOWEST]
    return [
        f"  slowest: line {r.case.line}: {r.duration_s:.2f} s, ${r.cost_usd:.6f}, {r.tokens} tokens"
        for r in slowest
    ]


def _failure(result: CaseResult) -> str:
    if result.error is not None:
        return f"line {result.case.line}: the run failed: {result.error}"
    failed = "; ".join(f"{s.name}: {s.rationale}" for s in result.scores if not s.passed)
    return f"line {result.case.line}: {failed}"
