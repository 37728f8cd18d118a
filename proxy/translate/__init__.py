"""Wire-format translations for gateway routes whose target speaks another format than the
client (an OpenAI-format client routed to Anthropic or Gemini). :func:`translation_for` is the
only registry; the interface is in :mod:`genops.proxy.translate.base`."""

from __future__ import annotations

from genops.proxy.translate.base import StreamTranslator, TranslatedRequest, Translation
from genops.proxy.translate.openai_anthropic import OpenAIToAnthropic
from genops.proxy.translate.openai_gemini import OpenAIToGemini

__all__ = ["StreamTranslator", "TranslatedRequest", "Translation", "translation_for"]

_TRANSLATIONS: dict[tuple[str, str], Translation] = {
    ("openai.chat", "anthropic.messages"): OpenAIToAnthropic(),
    ("openai.chat", "gemini.generate"): OpenAIToGemini(),
}


def translation_for(client_format: str, target_format: str) -> Translation | None:
    """The translation from ``client_format`` to ``target_format`` (None: none exists)."""
    return _TRANSLATIONS.get((client_format, target_format))
