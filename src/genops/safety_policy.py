"""Safety policies: what to do per category, from config, route and request header; strictest wins.

Syntax (``GENOPS_SAFETY_POLICY``, ``GenOps-Safety-Policy`` header, and each route's entry):
one action for every category (``block``) or per category (``pii=redact,secrets=block``);
categories not named keep the weaker layer's action. Actions from weakest to strictest:
``off`` (not scanned), ``annotate``, ``redact`` (mask in stored content), ``mask-upstream``
(also replace it in the request sent upstream), ``block`` (reject the call).
Per-route policies (``GENOPS_SAFETY_ROUTE_POLICY``): ``ROUTE:POLICY`` entries separated by
``;``, e.g. ``openai:secrets=block;vllm:block``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The safety categories a policy names (the detectors' categories, see genops.proxy.safety.findings).
CATEGORIES = ("pii", "secrets", "injection")
ACTIONS = ("off", "annotate", "redact", "mask-upstream", "block")
_RANKS = {action: i for i, action in enumerate(ACTIONS)}
_ALIASES = {"mask": "mask-upstream", "mask_upstream": "mask-upstream", "none": "off", "allow": "annotate",
            "log": "annotate", "secret": "secrets"}


def rank(action: str) -> int:
    """Strictness of an action (higher is stricter)."""
    try:
        return _RANKS[action]
    except KeyError:
        raise ValueError(f"{action!r} is not a safety action") from None


def stricter(a: str, b: str) -> str:
    """The stricter of two actions."""
    return a if rank(a) >= rank(b) else b


@dataclass(frozen=True)
class Policy:
    """The action per category."""

    pii: str = "annotate"
    secrets: str = "annotate"
    injection: str = "annotate"
    # Derived once (a policy is immutable and consulted on every call): see the properties below.
    _scanned: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _acts_before_forward: bool = field(init=False, repr=False, compare=False)
    _text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        actions = [self.action(c) for c in CATEGORIES]
        object.__setattr__(self, "_scanned", tuple(c for c, a in zip(CATEGORIES, actions, strict=True) if a != "off"))
        object.__setattr__(self, "_acts_before_forward", any(rank(a) >= rank("mask-upstream") for a in actions))
        object.__setattr__(self, "_text", ",".join(f"{c}={a}" for c, a in zip(CATEGORIES, actions, strict=True)))

    def action(self, category: str) -> str:
        """The action for ``category`` (pii|secrets|injection)."""
        return getattr(self, category)

    def categories_at_least(self, action: str) -> tuple[str, ...]:
        """Categories whose action is ``action`` or stricter."""
        floor = rank(action)
        return tuple(c for c in CATEGORIES if rank(self.action(c)) >= floor)

    def strictest(self, other: Policy | None) -> Policy:
        """Per category, the stricter of this policy and ``other``."""
        if other is None:
            return self
        return Policy(*(stricter(self.action(c), other.action(c)) for c in CATEGORIES))

    @property
    def scanned(self) -> tuple[str, ...]:
        """Categories that are scanned at all."""
        return self._scanned

    @property
    def acts_before_forward(self) -> bool:
        """True when the request must be scanned before it goes upstream (mask-upstream or block)."""
        return self._acts_before_forward

    def __str__(self) -> str:
        return self._text


#: A policy that sets nothing (every category at the weakest action): the neutral layer.
NOTHING = Policy("off", "off", "off")


def _action(raw: str) -> str:
    value = raw.strip().lower()
    value = _ALIASES.get(value, value)
    if value not in ACTIONS:
        raise ValueError(f"unknown safety action {raw.strip()!r} (expected one of {', '.join(ACTIONS)})")
    return value


def parse_policy(text: str, base: Policy = NOTHING) -> Policy:
    """Parse ``"block"`` or ``"pii=redact,secrets=block"``; unnamed categories keep ``base``'s action.

    Raises ``ValueError`` with a message fit for a user.
    """
    text = (text or "").strip()
    if not text:
        return base
    if "=" not in text:
        action = _action(text)
        return Policy(action, action, action)
    values = {c: base.action(c) for c in CATEGORIES}
    for item in text.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise ValueError(f"expected CATEGORY=ACTION, got {item.strip()!r}")
        name, action = item.split("=", 1)
        category = _ALIASES.get(name.strip().lower(), name.strip().lower())
        if category in ("all", "*"):
            for c in CATEGORIES:
                values[c] = _action(action)
            continue
        if category not in CATEGORIES:
            raise ValueError(f"unknown safety category {name.strip()!r} (expected {', '.join(CATEGORIES)})")
        values[category] = _action(action)
    return Policy(**values)


def parse_route_policies(text: str) -> dict[str, Policy]:
    """Parse ``"openai:secrets=block;vllm:block"`` into ``{route: policy}``."""
    routes: dict[str, Policy] = {}
    for entry in (text or "").split(";"):
        if not entry.strip():
            continue
        if ":" not in entry:
            raise ValueError(f"expected ROUTE:POLICY, got {entry.strip()!r}")
        route, policy = entry.split(":", 1)
        routes[route.strip().lower()] = parse_policy(policy)
    return routes


def validate_policy(text: str) -> str:
    """Config parser for ``GENOPS_SAFETY_POLICY``: the text, if it parses."""
    parse_policy(text, Policy())
    return str(text).strip()


def validate_route_policies(text: str) -> str:
    """Config parser for ``GENOPS_SAFETY_ROUTE_POLICY``."""
    parse_route_policies(text)
    return str(text).strip()
