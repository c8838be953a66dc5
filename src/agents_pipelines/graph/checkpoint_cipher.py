"""Checkpoints encrypted at rest, for workflows with ``redact_pii``.

A checkpoint must keep the state's real values, or a resumed run would go on with masked
ones; so instead of masking it, the saver encrypts every value it stores (the channel
values and the pending writes) with LangGraph's ``EncryptedSerializer``, here over AES-GCM
from ``cryptography`` (already installed with MLflow; LangGraph's own AES helper needs
pycryptodome). Values stored before encryption was turned on still load: the serializer
reads unencrypted entries as they are.

The key is AGENTS_PIPELINES_CHECKPOINT_KEY: 16, 24 or 32 random bytes in base64. Every
process that runs or resumes the workflow needs the same key.
"""

from __future__ import annotations

import base64
import binascii
import copy
import os
from typing import Any

from agents_pipelines._compat.langgraph import saver_serializer, set_saver_serializer
from agents_pipelines.errors import CheckpointKeyError
from agents_pipelines.settings import CHECKPOINT_KEY_ENV, settings

__all__ = ["AesGcmCipher", "checkpoint_key", "encrypted"]

CIPHER_NAME = "aesgcm"
_NONCE_BYTES = 12
MAKE_KEY = (
    f'export {CHECKPOINT_KEY_ENV}="$(python -c '
    "'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')\""
)


class AesGcmCipher:
    """LangGraph's CipherProtocol over AES-GCM: a fresh nonce per value, stored before the
    ciphertext; the tag makes a wrong key or a changed value fail to load."""

    def __init__(self, key: bytes):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(_NONCE_BYTES)
        return CIPHER_NAME, nonce + self._aead.encrypt(nonce, plaintext, None)

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        if ciphername != CIPHER_NAME:
            raise ValueError(f"a checkpoint value encrypted with {ciphername}, not {CIPHER_NAME}")
        nonce, sealed = ciphertext[:_NONCE_BYTES], ciphertext[_NONCE_BYTES:]
        return bytes(self._aead.decrypt(nonce, sealed, None))


def checkpoint_key(where: str) -> bytes:
    """The key from AGENTS_PIPELINES_CHECKPOINT_KEY; ``where`` (the workflow's file:line of
    redact_pii) goes into the CheckpointKeyError raised when it is missing or malformed."""
    secret = settings().checkpoint_key
    problem = f"{CHECKPOINT_KEY_ENV} is not set"
    if secret is not None:
        try:
            key = base64.b64decode(secret.get_secret_value(), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) in (16, 24, 32):
            return key
        problem = f"{CHECKPOINT_KEY_ENV} is not 16, 24 or 32 bytes in base64"
    raise CheckpointKeyError(
        f"{where}: redact_pii is on, so this workflow's checkpoints are encrypted at rest, "
        f"and {problem}. Fix: make a key and keep it with the deployment's secrets "
        f"(every process that runs the workflow needs the same one): {MAKE_KEY}; or set "
        "config.execution.resume: false to run without checkpoints."
    )


def encrypted(saver: Any, key: bytes) -> Any:
    """A copy of ``saver`` (same connection and lock) that encrypts what it stores."""
    from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

    sealed = copy.copy(saver)
    set_saver_serializer(sealed, EncryptedSerializer(AesGcmCipher(key), saver_serializer(saver)))
    return sealed
