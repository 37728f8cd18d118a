"""Credential detectors: provider API keys, PEM private keys, JWTs, connection strings, ``password=``.

Provider keys have fixed prefixes, so each pattern is gated by a substring hint and most
texts never reach the regex. Generic shapes (``password=...``, connection strings) drop
obvious placeholders (``<password>``, ``${DB_PASS}``, ``****``, ``os.getenv(...)``).
"""

from __future__ import annotations

import base64
import math
import re
from collections import Counter

import orjson

from genops.proxy.safety.detector import Detector

CATEGORY = "secrets"


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``: random keys score high, words and placeholders low."""
    if not value:
        return 0.0
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _random_looking(value: str, min_entropy: float = 3.0) -> bool:
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    return has_digit and has_alpha and shannon_entropy(value) >= min_entropy


def _keyish(min_entropy: float = 3.0, group: int = 0):
    def check(text: str, m: re.Match[str]) -> float | None:
        return 0.95 if _random_looking(m.group(group), min_entropy) else None

    return check


# OpenAI: sk-..., sk-proj-..., sk-svcacct-..., sk-admin-... (not Anthropic's sk-ant-).
_OPENAI = re.compile(r"(?<![\w-])sk-(?!ant-)(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,}(?![\w-])")
_ANTHROPIC = re.compile(r"(?<![\w-])sk-ant-(?:api|admin|oat|sid)\d{2}-[A-Za-z0-9_-]{32,}(?![\w-])")
_GOOGLE = re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])")
_AWS_KEY_PREFIXES = ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA")
_AWS_KEY_ID = re.compile(
    r"A(?<![A-Z0-9]A)(?:" + "|".join(p[1:] for p in _AWS_KEY_PREFIXES) + r")[A-Z2-7]{16}(?![A-Z0-9])"
)
_AWS_SECRET = re.compile(
    r"(?i)aws.{0,20}?(?:secret|private).{0,20}?(?:key)?[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
)
_GITHUB = re.compile(r"(?<![\w])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{60,255})(?![\w])")
_GITLAB = re.compile(r"(?<![\w-])glpat-[A-Za-z0-9_-]{20,}(?![\w-])")
_SLACK_TOKEN = re.compile(r"(?<![\w-])xox[abposre]-(?:\d+-)?[A-Za-z0-9-]{10,}(?![\w-])")
_SLACK_WEBHOOK = re.compile(r"https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{16,}")
_STRIPE = re.compile(r"(?<![\w])(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}(?![\w])")
_HUGGINGFACE = re.compile(r"(?<![\w])hf_[A-Za-z0-9]{30,}(?![\w])")
_NPM = re.compile(r"(?<![\w])npm_[A-Za-z0-9]{36}(?![\w])")
_SENDGRID = re.compile(r"(?<![\w])SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}(?![\w-])")
_TWILIO = re.compile(r"(?<![\w])SK[0-9a-f]{32}(?![\w])")
_AZURE_STORAGE = re.compile(r"(?i)AccountKey=([A-Za-z0-9/+]{40,}={0,2})")
_PEM = re.compile(
    r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----"
    r"(?:[\s\S]{0,8192}?-----END (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----)?"
)
_JWT = re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?![\w-])")


def _jwt(text: str, m: re.Match[str]) -> float | None:
    header = m.group().split(".", 1)[0]
    try:
        data = orjson.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return 0.95 if isinstance(data, dict) and ("alg" in data or "typ" in data) else None


_CONNECTION = re.compile(
    r"(?i)\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|redis|rediss|amqps?|mssql|sqlserver|"
    r"clickhouse|oracle|ftp|sftp|smtp|ldap|https?)://[^\s:/@\"'<>]{1,64}:([^\s@/\"'<>]{1,128})@[^\s/\"'<>]+"
)
_PLACEHOLDERS = re.compile(
    r"(?i)^(?:[*x.•]+|<[^>]*>|\[[^\]]*\]|\{[^}]*\}|\$\{?[\w.:-]+\}?|%\(?\w+\)?s?|\{\{.*\}\}|"
    r"pass(?:word)?|secret|your[_-]?\w*|changeme|example|dummy|placeholder|redacted|none|null|true|false|"
    r"undefined|hidden|xxx+|\.\.\.|(?:os\.)?(?:getenv|environ)\b.*|process\.env.*|env\(.*|input\(.*|"
    r"getpass.*|self\.\w+|config\.\w+|settings\.\w+|\w+\(.*)$"
)


def _not_placeholder(group: int, confidence: float):
    def check(text: str, m: re.Match[str]) -> float | None:
        value = m.group(group).strip("\"'`;,)")
        if len(value) < 4 or _PLACEHOLDERS.match(value):
            return None
        return confidence

    return check


_ASSIGNMENT = re.compile(
    r"(?i)(?<![\w-])(?:password|passwd|passphrase|pwd|db_pass|secret|secret_key|client_secret|api[_-]?key|"
    r"access[_-]?token|auth[_-]?token|private[_-]?key|bearer)[\"']?\s*(?:=|:|:=|=>|\bis\b)\s*"
    r"([\"']?)([^\s\"'`,;]{6,200})\1"
)


def _assignment(text: str, m: re.Match[str]) -> float | None:
    value = m.group(2)
    if _PLACEHOLDERS.match(value) or value.startswith(("os.", "process.", "$", "%", "{", "<", "(")):
        return None
    if value.endswith((")", "(")) or "(" in value:  # a function call, not a literal
        return None
    if value.lower().rstrip(".") in ("required", "optional", "incorrect", "invalid", "wrong", "missing", "reset", "expired"):
        return None
    return 0.9 if shannon_entropy(value) >= 2.5 else 0.75


DETECTORS: tuple[Detector, ...] = (
    Detector("anthropic_api_key", CATEGORY, _ANTHROPIC, "critical", 0.99, hints=("sk-ant-",)),
    Detector("openai_api_key", CATEGORY, _OPENAI, "critical", 0.95, _keyish(3.5), hints=("sk-",)),
    Detector("google_api_key", CATEGORY, _GOOGLE, "critical", 0.97, hints=("AIza",)),
    # Every key id starts with one of these (the pattern's literal prefixes); "A" alone let most texts through.
    Detector("aws_access_key_id", CATEGORY, _AWS_KEY_ID, "critical", 0.97, hints=_AWS_KEY_PREFIXES),
    Detector("aws_secret_access_key", CATEGORY, _AWS_SECRET, "critical", 0.9, _keyish(3.5, 1),
             lower_hints=("aws",), group=1),
    Detector("github_token", CATEGORY, _GITHUB, "critical", 0.98, hints=("gh", "github_pat_")),
    Detector("gitlab_token", CATEGORY, _GITLAB, "critical", 0.98, hints=("glpat-",)),
    Detector("slack_token", CATEGORY, _SLACK_TOKEN, "critical", 0.97, hints=("xox",)),
    Detector("slack_webhook", CATEGORY, _SLACK_WEBHOOK, "high", 0.98, hints=("hooks.slack.com",)),
    Detector("stripe_secret_key", CATEGORY, _STRIPE, "critical", 0.98, hints=("_live_", "_test_")),
    Detector("huggingface_token", CATEGORY, _HUGGINGFACE, "critical", 0.9, _keyish(3.5), hints=("hf_",)),
    Detector("npm_token", CATEGORY, _NPM, "critical", 0.95, hints=("npm_",)),
    Detector("sendgrid_api_key", CATEGORY, _SENDGRID, "critical", 0.98, hints=("SG.",)),
    Detector("twilio_api_key", CATEGORY, _TWILIO, "critical", 0.8, _keyish(3.0), hints=("SK",)),
    Detector("azure_storage_key", CATEGORY, _AZURE_STORAGE, "critical", 0.95, hints=("ccountKey=",), group=1),
    Detector("private_key", CATEGORY, _PEM, "critical", 0.99, hints=("PRIVATE KEY",)),
    Detector("jwt", CATEGORY, _JWT, "high", 0.95, _jwt, hints=("eyJ",)),
    Detector("connection_string", CATEGORY, _CONNECTION, "critical", 0.95, _not_placeholder(1, 0.95),
             hints=("://",), group=1),
    Detector("password_assignment", CATEGORY, _ASSIGNMENT, "high", 0.85, _assignment,
             lower_hints=("pass", "pwd", "secret", "key", "token", "bearer"), group=2),
)
