"""A model reply's text, as the ``str`` a state field of type ``str`` declares."""

from __future__ import annotations

from langchain_core.messages import BaseMessage


def text_of(reply: BaseMessage) -> str:
    """``reply.text`` as a plain ``str``.

    langchain-core 1.x returns a ``TextAccessor`` (a ``str`` subclass that is also callable,
    for the old ``.text()``). Stored as it is, the state, the checkpoints and the pickled
    asset value would hold langchain-core's class, not the ``str`` the field declares."""
    return str(reply.text)
