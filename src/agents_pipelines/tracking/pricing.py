"""Prices from MLflow's bundled price table, with per-model overrides from config.pricing."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from agents_pipelines.spec.models import ModelPrice
from agents_pipelines.usage import Price, TokenUsage, round_usd

OVERRIDE_SOURCE = "config.pricing"


@functools.cache  # a package-metadata lookup: once per process, not once per run
def _bundled_source() -> str:
    from importlib.metadata import version

    return f"mlflow bundled price table (mlflow {version('mlflow')})"


class MlflowPriceTable:
    """A Pricer. Lookups stay on the bundled table: no network on the run's path."""

    def __init__(self, overrides: Mapping[str, ModelPrice] | None = None):
        self._overrides = dict(overrides or {})
        self._source = _bundled_source()

    def price(self, model: str, usage: TokenUsage) -> Price | None:
        if (override := self._overrides.get(model)) is not None:
            return _override_price(override, usage)
        # Without a provider hint, MLflow scans only its bundled catalog; with one, it would
        # first try to download the latest catalog, which stalls an offline run.
        from mlflow.utils.providers import cost_per_token

        result = cost_per_token(
            model=model,
            prompt_tokens=usage.prompt,
            completion_tokens=usage.completion,
            cache_read_input_tokens=usage.cached,
        )
        if result is None:
            return None
        return Price(round_usd(result[0]), round_usd(result[1]), self._source)


def _override_price(price: ModelPrice, usage: TokenUsage) -> Price:
    cached_rate = (
        price.input_per_million
        if price.cached_input_per_million is None
        else price.cached_input_per_million
    )
    fresh = max(usage.prompt - usage.cached, 0)
    input_usd = (fresh * price.input_per_million + usage.cached * cached_rate) / 1_000_000
    output_usd = usage.completion * price.output_per_million / 1_000_000
    return Price(round_usd(input_usd), round_usd(output_usd), OVERRIDE_SOURCE)
