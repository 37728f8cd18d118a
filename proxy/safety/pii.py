"""Personal data detectors: e-mail, phone, payment card, IBAN, US SSN, IPv4/IPv6, UK NINO, date of birth.

Each pattern is followed by a validator where a checksum or context exists (Luhn for cards,
mod-97 for IBANs, ``ipaddress`` for IPs) so that look-alikes - UUIDs, order numbers,
version strings, timestamps, hashes - are dropped rather than reported.
"""

from __future__ import annotations

import ipaddress
import re

from genops.proxy.safety.detector import Detector, context_after, context_before, has_ascii_digit, has_digit

CATEGORY = "pii"

# -- e-mail -------------------------------------------------------------------------------
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
_EMAIL_FAKE_TLDS = {"png", "jpg", "jpeg", "gif", "svg", "webp", "js", "css", "py", "ts"}


def _email(text: str, m: re.Match[str]) -> float | None:
    tld = m.group().rsplit(".", 1)[-1].lower()
    if tld in _EMAIL_FAKE_TLDS:  # "icon@2x.png", "logo@3x.webp"
        return None
    before = text[m.start() - 1 : m.start()]
    if before == "/" or (before == ":" and not text[: m.start()].lower().endswith("mailto:")):
        return None  # user info of a URL ("https://token@host", "postgres://user:pass@host")
    if text[m.end() : m.end() + 1] == ":" and text[m.end() + 1 : m.end() + 2] not in ("", " ", "\n"):
        return None  # an scp/git remote ("git@github.com:org/repo.git")
    return 0.95


# -- payment cards (Luhn + issuer prefix) ---------------------------------------------------
# Patterns start with a character class (then look behind): the regex engine skips ahead
# to candidate characters instead of trying the look-behind at every position.
_CARD = re.compile(r"[0-9](?<![\d.-][0-9])(?:[ -]?[0-9]){12,18}(?![\d-])")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a digit string."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _issuer(digits: str) -> bool:
    n = len(digits)
    two, four = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return n == 16  # Mastercard
    if two in (34, 37):
        return n == 15  # Amex
    if digits.startswith("6011") or two == 65 or 644 <= int(digits[:3]) <= 649:
        return n in (16, 19)  # Discover
    if 3528 <= four <= 3589:
        return n in (16, 19)  # JCB
    if two in (36, 38, 39) or 300 <= int(digits[:3]) <= 305:
        return n in (14, 16, 19)  # Diners
    if two == 62:
        return 16 <= n <= 19  # UnionPay
    return False


def _card(text: str, m: re.Match[str]) -> float | None:
    raw = m.group()
    digits = raw.replace(" ", "").replace("-", "")
    if not 13 <= len(digits) <= 19 or not _issuer(digits) or not luhn_ok(digits):
        return None
    seps = {c for c in raw if c in " -"}
    if len(seps) > 1:
        return None
    if seps:  # grouped numbers must use card-like groups (4-4-4-4, 4-6-5)
        groups = [len(g) for g in re.split(r"[ -]", raw)]
        if groups not in ([4, 4, 4, 4], [4, 6, 5], [4, 6, 4], [4, 4, 4, 4, 3], [4, 4, 4, 1], [4, 4, 4, 3]):
            return None
    before = context_before(text, m.start(), 20)
    if any(w in before for w in ("order", "invoice", "tracking", "ref", "id:", "#")):
        return 0.6 if any(w in before for w in ("card", "visa", "amex")) else None
    return 0.95


# -- IBAN (ISO 13616 mod-97) ---------------------------------------------------------------
_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24,
    "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21,
    "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}


def iban_ok(candidate: str) -> bool:
    """Country length and mod-97 checksum of an IBAN (spaces allowed)."""
    iban = candidate.replace(" ", "")
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _iban(text: str, m: re.Match[str]) -> float | None:
    return 0.97 if iban_ok(m.group()) else None


# -- US SSN ------------------------------------------------------------------------------------
_SSN = re.compile(r"[0-9](?<![\d-][0-9])[0-9]{2}([- ])[0-9]{2}\1[0-9]{4}(?![\d-])")


def _ssn(text: str, m: re.Match[str]) -> float | None:
    area, group, serial = re.split(r"[- ]", m.group())
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None  # never issued
    before = context_before(text, m.start(), 30)
    if any(w in before for w in ("ssn", "social security", "social-security", "taxpayer", "tin")):
        return 0.97
    if m.group(1) == " ":  # "123 45 6789" without context is too ambiguous
        return None
    return 0.85


# -- phone numbers (international and national formats) ---------------------------------------
# A cheap candidate (digits, spaces, dots, dashes, parentheses) checked against the real shape.
_PHONE = re.compile(r"[+(0-9](?<![\w+/.:-][+(0-9])[\d() .+-]{5,28}[0-9](?![\w/:]|[.-]\d)")
_PHONE_SHAPE = re.compile(r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{1,5}(?:[ .-]\d{1,8}){1,5}|\+\d{7,15}")
_DATE_LIKE = re.compile(r"^(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})")
_PHONE_WORDS = ("phone", "call", "tel", "mobile", "cell", "whatsapp", "fax", "contact", "reach", "text me", "sms", "dial")
# Numbers introduced like this are identifiers, not phone numbers.
_NOT_PHONE_CONTEXT = re.compile(
    r"(?:\b(?:order|invoice|tracking|version|build|ref|reference|isbn|serial|account|acct|id|po|sku|port|zip|"
    r"postcode|ticket|case|job|pid|txn|transaction|receipt|shipment|batch|lot|item|part|model|no|number)|#|\bv)"
    r"[\s:#.=-]*(?:no\.?|number|nr\.?|#)?[\s:#.=-]*$"
)


def _phone(text: str, m: re.Match[str]) -> float | None:
    raw = m.group()
    digits = sum(c.isdigit() for c in raw)
    if not 7 <= digits <= 15 or not _PHONE_SHAPE.fullmatch(raw):
        return None
    if _DATE_LIKE.match(raw):
        return None
    international = raw.startswith("+")
    before = context_before(text, m.start(), 24)
    after = context_after(text, m.end(), 4)
    phone_context = any(w in before for w in _PHONE_WORDS)
    if not phone_context and _NOT_PHONE_CONTEXT.search(before):
        return None
    if after[:1] in ("%",) or after.startswith((" ms", "ms", " kb", " mb", " gb")):
        return None
    seps = {c for c in raw if c in " .-"}
    if "." in seps:
        if _looks_like_ipv4(raw):
            return None
        if not international and not phone_context and len(seps) == 1 and raw.count(".") != 2:
            return None  # "1.23.456.7890"-style numbers are more often versions or amounts
    if international:
        return 0.9
    if raw.startswith("(") or re.fullmatch(r"\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}", raw):
        return 0.9 if phone_context or raw.startswith("(") or len(seps) == 1 else 0.8
    if raw.startswith("0") and raw[1:2] not in ("0", "-", " ", ".") and 9 <= digits <= 12 and seps:
        return 0.85  # national trunk prefix: "020 7946 0958", "030 901820"
    if phone_context and digits >= 7:
        return 0.8
    return None


def _looks_like_ipv4(raw: str) -> bool:
    parts = raw.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) <= 255 for p in parts)


# -- IP addresses --------------------------------------------------------------------------------
_IPV4 = re.compile(r"[0-9](?<![\w.][0-9])[0-9]{0,2}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![\w]|\.\d)")
_VERSION_WORDS = ("version", "ver ", "ver.", " v", "release", "build", "firmware", "kernel", "python", "node ",
                  "chrome", "oid", "snmp", "@")


def _ipv4(text: str, m: re.Match[str]) -> float | None:
    try:
        ip = ipaddress.IPv4Address(m.group())
    except ValueError:  # an octet over 255, or a leading zero
        return None
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast or str(ip) == "255.255.255.255" or ip.is_reserved:
        return None
    if text[m.end() : m.end() + 1] == "/":
        return None  # a network in CIDR notation, not a host
    before = context_before(text, m.start(), 14)
    if before.endswith("v") or any(w in before for w in _VERSION_WORDS):
        return None
    if ip.is_private or ip.is_link_local:
        return 0.7
    return 0.9


_IPV6 = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:)[0-9A-Fa-f:]{3,39}(?:%\w+)?(?![\w:])")


def _ipv6(text: str, m: re.Match[str]) -> float | None:
    raw = m.group().split("%", 1)[0]
    try:
        ip = ipaddress.IPv6Address(raw)
    except ValueError:
        return None
    if ip.is_loopback or ip.is_unspecified:
        return None
    groups = [g for g in raw.split(":") if g]
    if len(groups) < 3:  # "a::b", "10::30" - more likely something else
        return None
    if "::" not in raw and all(len(g) == 2 for g in groups):  # MAC-like
        return None
    return 0.9


# -- UK National Insurance number ----------------------------------------------------------------
_NINO = re.compile(r"[A-CEGHJ-PR-TW-Z](?<![A-Za-z0-9][A-Z])[A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])")

# -- date of birth (only with context: plain dates are not personal data) ------------------------
_DOB = re.compile(
    r"(?i)\b(?:date of birth|d\.?o\.?b\.?|born(?: on)?|birth ?date|birthday)\s*(?:is|:|was|-)?\s*"
    r"(\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{4}-\d{2}-\d{2}|\d{1,2}(?:st|nd|rd|th)? \w{3,9},? \d{4}"
    r"|\w{3,9} \d{1,2}(?:st|nd|rd|th)?,? \d{4})"
)



def _nino(text: str, m: re.Match[str]) -> float | None:
    if m.group()[:2] in ("BG", "GB", "KN", "NK", "NT", "TN", "ZZ"):
        return None  # prefixes never allocated
    before = context_before(text, m.start(), 30)
    return 0.95 if ("insurance" in before or "nino" in before or "ni number" in before) else 0.85


# Gates: ``[0-9]`` in a pattern needs an ASCII digit, ``\d`` any Unicode digit (see detector.py).
DETECTORS: tuple[Detector, ...] = (
    Detector("email", CATEGORY, _EMAIL, "medium", 0.95, _email, hints=("@",)),
    Detector("payment_card", CATEGORY, _CARD, "high", 0.95, _card, needs=(has_ascii_digit,)),
    Detector("iban", CATEGORY, _IBAN, "high", 0.97, _iban, needs=(has_digit,)),
    Detector("us_ssn", CATEGORY, _SSN, "high", 0.85, _ssn, needs=(has_ascii_digit,)),
    Detector("phone", CATEGORY, _PHONE, "medium", 0.85, _phone, needs=(has_ascii_digit,)),
    Detector("ipv4", CATEGORY, _IPV4, "low", 0.9, _ipv4, hints=(".",), needs=(has_ascii_digit,)),
    Detector("ipv6", CATEGORY, _IPV6, "low", 0.9, _ipv6, hints=(":",)),
    Detector("uk_nino", CATEGORY, _NINO, "high", 0.85, _nino, needs=(has_digit,)),
    Detector("date_of_birth", CATEGORY, _DOB, "medium", 0.85, lower_hints=("birth", "dob", "d.o.b", "born"), group=1,
             needs=(has_digit,)),
)
