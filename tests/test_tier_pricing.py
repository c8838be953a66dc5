"""Service tiers are priced from MLflow's bundled catalog (its ``service_tiers``, which
MLflow's own cost function drops) and from config.pricing's per-tier rates."""

from __future__ import annotations

import pytest

from agents_pipelines.spec.models import ModelPrice
from agents_pipelines.tracking.pricing import BundledCatalogPrices, MlflowPriceTable
from agents_pipelines.usage import SERVICE_TIERS, TokenUsage

MILLION = TokenUsage(prompt=1_000_000, completion=1_000_000, total=2_000_000)
PRICERS = [MlflowPriceTable, BundledCatalogPrices]


@pytest.mark.parametrize("pricer", PRICERS)
@pytest.mark.parametrize(
    ("tier", "input_usd", "output_usd"),
    [
        ("standard", 0.30, 2.50),
        ("flex", 0.15, 1.25),
        ("batch", 0.15, 1.25),
        ("priority", 0.54, 4.5),
    ],
)
def test_each_tier_has_the_catalogs_rates(
    pricer: type[MlflowPriceTable], tier: str, input_usd: float, output_usd: float
) -> None:
    price = pricer().price("gemini-2.5-flash", MILLION, tier)
    assert price is not None
    assert (price.input_usd, price.output_usd) == (input_usd, output_usd)
    assert ("tier" in price.source) is (tier != "standard")


@pytest.mark.parametrize("tier", SERVICE_TIERS)
@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash"])
def test_both_pricers_agree_at_every_tier(tier: str, model: str) -> None:
    usage = TokenUsage(prompt=12_345, completion=6_789, cached=2_000)
    assert BundledCatalogPrices().price(model, usage, tier) == MlflowPriceTable().price(
        model, usage, tier
    )


@pytest.mark.parametrize("pricer", PRICERS)
def test_a_model_without_tier_rates_is_priced_at_standard_and_says_so(
    pricer: type[MlflowPriceTable],
) -> None:
    # gemini-2.0-flash has no service_tiers in MLflow 3.17's catalog.
    flex = pricer().price("gemini-2.0-flash", MILLION, "flex")
    standard = pricer().price("gemini-2.0-flash", MILLION)
    assert flex is not None and standard is not None
    assert flex.total_usd == standard.total_usd
    assert flex.source.endswith("standard rates (no flex tier rates)")


@pytest.mark.parametrize("pricer", PRICERS)
def test_an_override_prices_each_tier_it_names(pricer: type[MlflowPriceTable]) -> None:
    override = ModelPrice.model_validate(
        {
            "input_per_million": 1.0,
            "output_per_million": 4.0,
            "service_tiers": {"flex": {"input_per_million": 0.5, "output_per_million": 2.0}},
        }
    )
    prices = pricer({"gemini-2.5-flash": override})
    flex = prices.price("gemini-2.5-flash", MILLION, "flex")
    priority = prices.price("gemini-2.5-flash", MILLION, "priority")
    assert flex is not None and (flex.input_usd, flex.output_usd) == (0.5, 2.0)
    assert flex.source == "config.pricing, flex tier"
    assert priority is not None and (priority.input_usd, priority.output_usd) == (1.0, 4.0)
    assert priority.source == "config.pricing, standard rates (no priority tier rates)"
