"""Python that the malformed catalogue's workflows name (tests/malformed/12x_*.yaml): each
object is wrong in one way a load-time rule must catch."""

from __future__ import annotations

NOT_CALLABLE = 42


def needs_customer(customer_id: str) -> dict[str, str]:
    """A step whose parameter names no state field of the workflow."""
    return {"reply": customer_id}


def untyped_tool(order_id):  # type: ignore[no-untyped-def]  # untyped on purpose
    """A tool without types: Gemini could not be told what to pass."""
    return order_id


def undocumented_tool(order_id: str) -> str:
    return order_id


def lookup_order(order_id: str) -> str:
    """A tool named like shop.orders:lookup_order: Gemini could reach only one of the two."""
    return order_id
