"""Prompt-injection and jailbreak heuristics (phrases, invisible Unicode, encoded payloads).

Heuristics, not a model: they catch the common phrasings of instruction overrides,
system-prompt exfiltration and role-play jailbreaks, smuggled invisible / tag characters,
and base64 or hex blobs that decode to such phrasing. The scanner raises the severity when
a hit sits in a tool result (indirect injection). Measured precision/recall live in the
test corpus; paraphrases these patterns miss are kept there too.
"""

from __future__ import annotations

import base64
import binascii
import re

from genops.proxy.safety.detector import Detector, has_long_token, has_non_ascii

CATEGORY = "injection"

_W = r"(?:\s+\w+){0,3}?\s+"  # up to three filler words ("all of the", "any")

_OVERRIDE = re.compile(
    r"\b(?:"
    r"(?:ignore|disregard|forget|skip|override|bypass|drop|abandon|neglect)" + _W
    + r"(?:previous|prior|preceding|above|earlier|initial|original|system|developer|your|all|any|these|those|the)"
    r"(?:\s+\w+){0,2}?\s+(?:instructions?|prompts?|rules|directions|guidelines|directives|guardrails|constraints|"
    r"restrictions|context|messages?|policies|programming)"
    r"|(?:new|updated|real|actual)\s+(?:system\s+)?(?:instructions?|directives?|rules)\s*(?::|follow|are\b|override)"
    r"|from now on,?\s+(?:you|your)\s+(?:will|are|must|shall|only|respond|answer|have no)"
    r"|(?:do not|don't|never)\s+(?:follow|obey|adhere to|apply)\s+(?:your|the|any)(?:\s+\w+)?\s+"
    r"(?:instructions|rules|guidelines|policies|restrictions)"
    r"|(?:instead|rather),?\s+(?:you\s+(?:must|should|will)\s+)?(?:only\s+)?(?:reply|respond|output|say|answer)\s+(?:with|only)"
    r"|(?:system|admin|developer)\s*(?:override|mode\s+enabled|message)\s*[:\]]"
    r"|ignora(?:r)?\s+(?:todas\s+)?las\s+instrucciones|ignorez\s+(?:toutes\s+)?les\s+instructions"
    r"|ignoriere\s+(?:alle\s+)?(?:vorherigen\s+)?anweisungen"
    r")"
)

# Chat-template and role markers smuggled into content.
_MARKERS = re.compile(r"\[\s*(?:system|inst)\s*\]|<\|?(?:im_start\|?>\s*system|system\|?>)|###\s*(?:system|instruction)")

_EXFIL = re.compile(
    r"\b(?:"
    r"(?:reveal|print|show|display|repeat|output|leak|dump|tell me|give me|what (?:is|are|was|were)|share|write out|"
    r"spell out|recite)"
    r"(?:\s+\w+){0,3}?\s+(?:your|the|my)?\s*(?:full\s+|entire\s+|exact\s+|original\s+|initial\s+|hidden\s+|secret\s+)*"
    r"(?:system|initial|original|hidden|developer|pre-?)\s*(?:prompts?|instructions?|messages?|rules)"
    r"|(?:repeat|print|output|copy)\s+(?:all\s+|everything\s+|the\s+)?(?:text|words|everything|content)\s+"
    r"(?:above|before|preceding|prior)"
    r"|everything (?:above|before) this (?:line|message)"
    r"|(?:beginning|start) with ['\"]?you are"
    r")"
)

_ROLEPLAY = re.compile(
    r"(?:"
    r"\bdan\b(?=.{0,80}(?:anything|mode|jailbreak|stands for))|\bdo anything now\b"
    r"|\bjailbroken\b|\bjailbreak(?:ed)? (?:mode|prompt|enabled|activated)\b"
    r"|\b(?:enable|activate|enter|switch to|turn on|you are in)\s+(?:the\s+)?(?:developer|god|dev) mode\b"
    r"|\bevil (?:confidant|assistant|twin)\b|\baim\b(?=.{0,40}machiavellian)"
    r"|\b(?:you are|you're) (?:no longer|not) (?:an ai|a language model|chatgpt|claude|bound|restricted|limited)"
    r"|\b(?:pretend|imagine|act|roleplay|role-play)(?: as| to be| that you are| you are)?\b.{0,60}?"
    r"\b(?:without|no|free of|free from|not bound by|ignoring)\s+(?:any\s+)?(?:restrictions|filters|limits|limitations|"
    r"rules|guidelines|ethics|morals|censorship|content polic(?:y|ies)|safety)"
    r"|\b(?:unfiltered|uncensored|unrestricted|unaligned) (?:ai|mode|assistant|model|version|response)"
    r"|\bstay in character\b(?=.{0,80}(?:no matter|always|even if))"
    r"|\b(?:opposite|anti)-?(?:gpt|mode)\b"
    r")"
)

# Zero-width and bidi controls, and the Unicode "tag" block used to smuggle invisible ASCII.
_INVISIBLE = re.compile(r"[\u200b\u200c\u200e\u200f\u2060-\u2064\u202a-\u202e\u2066-\u2069\U000e0000-\U000e007f]+")
_TAGS = re.compile(r"[\U000e0000-\U000e007f]")
_BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069]")


def _invisible(text: str, m: re.Match[str]) -> float | None:
    run = m.group()
    if _TAGS.search(run):
        return 0.97
    if _BIDI.search(run):
        return 0.85
    # Lone zero-width characters appear in ordinary text (word joiners, copy-paste): flag runs
    # or texts that contain many of them.
    if len(run) >= 3:
        return 0.8
    return None


_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=_-])(?:[A-Za-z0-9+/]{4}){6,}"
                     r"(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?(?![A-Za-z0-9+/=_-])")
_HEX = re.compile(r"[0-9A-Fa-f](?<![0-9A-Fa-f][0-9A-Fa-f])[0-9A-Fa-f]{31,}(?![0-9A-Fa-f])")


def _decoded_is_injection(decoded: bytes) -> float | None:
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(ch.isprintable() or ch.isspace() for ch in text)
    if not text or printable / len(text) < 0.95:
        return None
    lower = text.lower()
    if _OVERRIDE.search(lower) or _EXFIL.search(lower) or _ROLEPLAY.search(lower):
        return 0.95
    return None


def _base64(text: str, m: re.Match[str]) -> float | None:
    try:
        decoded = base64.b64decode(m.group(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return _decoded_is_injection(decoded)


def _hex(text: str, m: re.Match[str]) -> float | None:
    if len(m.group()) % 2:
        return None
    try:
        decoded = bytes.fromhex(m.group())
    except ValueError:
        return None
    return _decoded_is_injection(decoded)


DETECTORS: tuple[Detector, ...] = (
    Detector("instruction_override", CATEGORY, _OVERRIDE, "high", 0.9,
             # One distinctive word of each alternative of the pattern, so ordinary text skips the regex.
             lower_hints=("ignor", "disregard", "forget", "skip", "overrid", "bypass", "drop", "abandon", "neglect",
                          "instruction", "directive", "rules", "from now on", "follow", "obey", "adhere", "apply",
                          "instead", "rather", "mode enabled", "message"), lowercase=True),
    Detector("instruction_override", CATEGORY, _MARKERS, "high", 0.9, hints=("[", "<", "###"), lowercase=True),
    Detector("system_prompt_exfiltration", CATEGORY, _EXFIL, "high", 0.9,
             lower_hints=("prompt", "instruction", "message", "rules", "above", "before", "preceding", "prior",
                          "start with", "beginning with"), lowercase=True),
    Detector("roleplay_jailbreak", CATEGORY, _ROLEPLAY, "high", 0.85,
             lower_hints=("dan", "anything now", "jailbr", " mode", "evil ", "aim", "you are no", "you are not",
                          "you're no", "you're not", "restriction", "filter", "limit", "rules", "guideline", "ethic",
                          "moral", "censor", "polic", "safety", "unrestricted", "unaligned", "stay in character",
                          "opposite", "antigpt", "anti-gpt", "antimode", "anti-mode"), lowercase=True),
    Detector("invisible_unicode", CATEGORY, _INVISIBLE, "medium", 0.8, _invisible, needs=(has_non_ascii,)),
    # 24 base64 characters / 32 hex digits in a row: never across whitespace.
    Detector("encoded_payload", CATEGORY, _BASE64, "high", 0.95, _base64, needs=(has_long_token,)),
    Detector("encoded_payload", CATEGORY, _HEX, "high", 0.95, _hex, needs=(has_long_token,)),
)
