"""Reviews for the `review_digest` workflow's Python step (workflows/review_digest.yaml).

A real step would call an API here; this one returns a fixed sample, so the example runs
offline and the same every time.
"""

from __future__ import annotations

_REVIEWS = {
    "kettle": [
        "Boils fast and the handle stays cool. Love it.",
        "Stopped working after two weeks; the switch is flimsy.",
        "Fine for the price, but it is louder than I expected.",
        "The limescale filter is easy to clean. Would buy again.",
    ],
    "toaster": [
        "Toasts evenly on both sides.",
        "The crumb tray sticks and the timer is hard to read.",
        "Does the job, nothing more.",
    ],
}


def fetch_reviews(product: str, limit: int = 20) -> dict[str, list[str]]:
    """The latest reviews of ``product`` (at most ``limit``), as the node's ``reviews``."""
    return {"reviews": _REVIEWS.get(product.strip().lower(), [])[:limit]}


_DAILY_POOL = (
    "Arrived a day early and works perfectly.",
    "The lid broke on the first use. Refund please.",
    "Good value, though the cable is short.",
    "Customer service answered within an hour. Impressed.",
    "Leaks from the bottom seam after a week.",
    "Does what it says. Nothing special.",
    "Beautiful design, but it scratches easily.",
    "Third one I have bought; still the best.",
)


def reviews_of_day(day: str) -> dict[str, list[str]]:
    """The reviews received on ``day`` (``2026-11-01``): a few from a fixed pool, chosen by
    the date so that each day reads differently and the same day always reads the same."""
    seed = sum(map(ord, day))
    count = 3 + seed % 4
    return {"reviews": [_DAILY_POOL[(seed + 3 * i) % len(_DAILY_POOL)] for i in range(count)]}
