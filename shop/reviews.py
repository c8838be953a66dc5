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
