"""What one run of a workflow should cost, before anything is spent.

Input tokens are counted on each LLM node's prompts rendered with the run's inputs, by a
``TokenCounter``: Gemini's countTokens (llm.token_count) when a key is set, else
``chars_per_token`` below. A placeholder whose text is not known before the run gets a
stand-in size (see ``_Estimator.stand_in``). Output tokens per call are the node's
``expected_output_tokens``, else its ``max_output_tokens``, else ``DEFAULT_OUTPUT_TOKENS``.

Assumptions, as the README's *Estimates* states them: every node runs once (routes are all
taken, loops go round once); a map node makes one call per item; a tool node makes one call
(each tool round trip adds a call that is not counted); Python steps cost nothing; each
call is priced at the service tier its node asks for (``llm.service_tier``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from agents_pipelines.spec.models import LlmConfig, Node, RegistryPrompt, WorkflowSpec
from agents_pipelines.spec.placeholders import Template, as_text, parse_template
from agents_pipelines.usage.records import STANDARD, Pricer, TokenUsage, round_usd

# A reply of a few paragraphs plus Gemini 2.5's thinking tokens, which are billed as output.
DEFAULT_OUTPUT_TOKENS = 1000
# The size of a value nobody knows before the run: a Python step's output, an input not given.
UNKNOWN_FIELD_TOKENS = 250
# Items of a map over a list that a node writes, when --items does not say.
DEFAULT_MAP_ITEMS = 10
# Google's rule of thumb for Gemini: "a token is about 4 characters".
CHARS_PER_TOKEN = 4

# (the node's LLM settings, texts) -> the tokens of all the texts together.
TokenCounter = Callable[[LlmConfig, Sequence[str]], int]


def chars_per_token(llm: LlmConfig, texts: Sequence[str]) -> int:
    """The no-key count: characters / 4, rounded up, per text."""
    return sum(math.ceil(len(text) / CHARS_PER_TOKEN) for text in texts)


@dataclass(frozen=True)
class NodeEstimate:
    node: str
    model: str  # "python" for a Python step
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None  # None: the model has no price
    price_source: str | None
    tier: str = STANDARD  # the service tier the node's calls ask for, and are priced at

    @property
    def priced_as(self) -> str:
        """The model, and its tier when not standard: ``gemini-2.5-flash (flex)``."""
        return self.model if self.tier == STANDARD else f"{self.model} ({self.tier})"


@dataclass(frozen=True)
class Estimate:
    """One run's expected tokens and cost; ``times(n)`` scales it to n runs."""

    workflow: str
    counted_by: str
    nodes: tuple[NodeEstimate, ...]
    stand_ins: tuple[str, ...]  # what was sized without its text, and how
    runs: int = 1

    @property
    def input_tokens(self) -> int:
        return sum(node.input_tokens for node in self.nodes) * self.runs

    @property
    def output_tokens(self) -> int:
        return sum(node.output_tokens for node in self.nodes) * self.runs

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cost_usd(self) -> float:
        return round_usd(sum(node.cost_usd or 0.0 for node in self.nodes) * self.runs)

    @property
    def unpriced_models(self) -> list[str]:
        return sorted({n.model for n in self.nodes if n.cost_usd is None and n.calls})

    @property
    def price_sources(self) -> dict[str, str]:
        return {n.priced_as: n.price_source for n in self.nodes if n.price_source is not None}

    def times(self, runs: int) -> Estimate:
        return replace(self, runs=runs)


def estimate_run(
    spec: WorkflowSpec,
    values: Mapping[str, Any],
    counter: TokenCounter,
    pricer: Pricer,
    *,
    counted_by: str,
    items: int | None = None,
) -> Estimate:
    """The estimate of one run whose input fields hold ``values`` (those left out are
    sized by stand-ins); ``items`` sets every map node's item count."""
    estimator = _Estimator(spec, values, counter, items)
    nodes = tuple(_priced(estimator.node(node), pricer) for node in spec.nodes)
    return Estimate(spec.flow.name, counted_by, nodes, tuple(estimator.notes))


def output_tokens_per_call(llm: LlmConfig) -> int:
    return llm.expected_output_tokens or llm.max_output_tokens or DEFAULT_OUTPUT_TOKENS


def _priced(node: NodeEstimate, pricer: Pricer) -> NodeEstimate:
    if node.model == "python":
        return replace(node, cost_usd=0.0)
    usage = TokenUsage(node.input_tokens, node.output_tokens)
    price = pricer.price(node.model, usage, node.tier)
    if price is None:
        return node
    return replace(node, cost_usd=price.total_usd, price_source=price.source)


class _Estimator:
    def __init__(
        self,
        spec: WorkflowSpec,
        values: Mapping[str, Any],
        counter: TokenCounter,
        items: int | None,
    ):
        self.spec, self.counter, self.items = spec, counter, items
        # Only input fields have a text before the run; a written field's default is replaced.
        self.values = {k: v for k, v in values.items() if k in spec.input_fields}
        self.notes: list[str] = []

    def node(self, node: Node) -> NodeEstimate:
        if not node.calls_llm:
            return NodeEstimate(node.id, "python", 0, 0, 0, None, None)
        llm = self.spec.config.llm.merged(node.llm)
        calls, input_tokens = self._input_tokens(node, llm)
        output = output_tokens_per_call(llm) * calls
        tier = "batch" if llm.batch_mode is not None else llm.service_tier  # llm.batch
        return NodeEstimate(node.id, llm.model, calls, input_tokens, output, None, None, tier)

    def _input_tokens(self, node: Node, llm: LlmConfig) -> tuple[int, int]:
        """(calls, input tokens of all of them)."""
        templates = [parse_template(t) for t in (node.system, _known_text(node)) if t]
        if node.map is None:
            texts, extra = self._render(node, templates, {})
            return 1, self.counter(llm, texts) + extra
        known = self.values.get(node.map.over)
        calls = self.item_count(node)
        if calls == 0:  # an empty list: no call
            return 0, 0
        if isinstance(known, list) and known:
            rendered = [self._render(node, templates, {node.map.as_: item}) for item in known]
            texts = [text for item_texts, _ in rendered for text in item_texts]
            total = self.counter(llm, texts) + sum(extra for _, extra in rendered)
            return calls, round(total * calls / len(known))
        texts, extra = self._render(node, templates, {})
        item = math.ceil(self.stand_in(node.map.over) / max(calls, 1))
        per_call = self.counter(llm, texts) + extra + item * self._uses(templates, node)
        return calls, per_call * calls

    def item_count(self, node: Node) -> int:
        assert node.map is not None
        known = self.values.get(node.map.over)
        if self.items is not None:
            return self.items
        if isinstance(known, list):
            return len(known)
        self._note(f"{node.id}: {DEFAULT_MAP_ITEMS} items of `{node.map.over}` (default)")
        return DEFAULT_MAP_ITEMS

    def _uses(self, templates: list[Template], node: Node) -> int:
        assert node.map is not None
        return sum(field == node.map.as_ for t in templates for _, field in t.parts)

    def _render(
        self, node: Node, templates: list[Template], item: Mapping[str, Any]
    ) -> tuple[list[str], int]:
        """The templates' texts with every known value, and the stand-in tokens of the
        placeholders whose text is unknown (left empty in the texts)."""
        known = {**self.values, **item}
        texts: list[str] = []
        extra = 0
        for template in templates:
            pieces: list[str] = []
            for literal, field in template.parts:
                pieces.append(literal)
                if field is None:
                    continue
                if field in known:
                    pieces.append(as_text(known[field]))
                elif node.map is None or field != node.map.as_:
                    extra += self.stand_in(field)
            texts.append("".join(pieces))
        return texts, extra

    def stand_in(self, field: str) -> int:
        """The size of a field whose text is unknown: its share of the reply of the LLM
        node that writes it (every item's, for a map node), the largest if several do;
        UNKNOWN_FIELD_TOKENS for a Python step's output or an input not given."""
        sizes = {
            writer.id: math.ceil(self._reply_tokens(writer) / len(writer.outputs))
            for writer in self.spec.nodes
            if field in writer.outputs and writer.calls_llm
        }
        if sizes:
            writer, size = max(sizes.items(), key=lambda pair: pair[1])
            self._note(f"`{field}`: {size} tokens (output of `{writer}`)")
            return size
        why = "a Python step's output"
        if field in self.spec.input_fields:
            why = "an input given empty" if field in self.values else "an input not given"
        self._note(f"`{field}`: {UNKNOWN_FIELD_TOKENS} tokens ({why})")
        return UNKNOWN_FIELD_TOKENS

    def _reply_tokens(self, writer: Node) -> int:
        per_call = output_tokens_per_call(self.spec.config.llm.merged(writer.llm))
        return per_call * (self.item_count(writer) if writer.map is not None else 1)

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)


def _known_text(node: Node) -> str | None:
    """The prompt's text. A registry prompt is pinned at load by the code location and the
    CLI (tracking.prompt_registry.at_load); one that is not (a workflow loaded by hand,
    never read from the registry) is sized as empty."""
    if isinstance(node.prompt, RegistryPrompt) and node.prompt.pinned_uri is None:
        return None
    return node.prompt_text
