"""Tools for the `support_reply` workflow (workflows/support_reply.yaml).

Each tool is a typed function with a docstring: Gemini is sent its name, its docstring and
its parameters' types, and decides when to call it. The data is a fixed sample.
"""

from __future__ import annotations

_ORDERS: dict[str, dict[str, object]] = {
    "A1001": {"status": "delivered", "item": "kettle", "total_eur": 39.9, "on": "2026-11-03"},
    "A1002": {"status": "in transit", "item": "toaster", "total_eur": 24.5, "on": None},
}
_REFUNDS = {"A1001": "refund of 39.90 EUR approved on 2026-11-05, paid within 5 days"}


def lookup_order(order_id: str) -> dict[str, object]:
    """Look an order up by its id (e.g. A1001): its status, item, total and delivery date (`on`)."""
    order = _ORDERS.get(order_id.strip().upper())
    if order is None:
        return {"order_id": order_id, "found": False}
    return {"order_id": order_id, "found": True, **order}


def refund_status(order_id: str) -> str:
    """The state of the refund requested for an order, if any."""
    return _REFUNDS.get(order_id.strip().upper(), f"no refund was requested for {order_id}")
