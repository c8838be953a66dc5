"""A verdict: what one eval said about one final state, with what its judge cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Verdict:
    """One eval's result. A rule costs nothing (``model`` None, figures 0); a judge's
    figures are its calls', retried attempts included. ``error`` is set when the judge
    could give no verdict (a failed call, a reply that does not parse, a budget or spend
    limit reached before the call): the eval then fails, and ``rationale`` says why."""

    name: str
    passed: bool
    rationale: str
    kind: Literal["judge", "rule"]
    model: str | None
    cost_usd: float
    input_tokens: int
    output_tokens: int
    total_tokens: int
    blocking: bool
    error: str | None = None
