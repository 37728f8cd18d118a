"""Synthetic LLM traffic with injected anomalies, for demos and for measuring the detectors.

``generate`` writes ``otel_traces`` rows (the same columns the proxy and the OTLP receiver
write, so every materialized view fills) for a span of simulated time: several services,
models, users and agent sessions, a daily cycle with a quieter weekend, Poisson noise, and
lognormal latencies and token counts. ``schedule_injections`` places anomalies of every
kind at known times on two tracks (model-level and service/user/session-level) so they do
not mask each other; each :class:`Injection` says which detector should catch it and under
which entity name.

Rows carry ``ScopeName = 'genops.demo'``, so demo data can be told apart (and deleted).
"""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from opentelemetry.trace import SpanKind, StatusCode

from genops import semconv as sc
from genops.storage.rows import (
    BOOL_STRINGS,
    SERVICE_NAME_KEY,
    SPAN_KIND_NAMES,
    STATUS_NAMES,
    TRACE_COLUMN_INDEX,
    insert_rows,
)

DEMO_SCOPE = "genops.demo"
# Spelled by the row schema (genops.storage.rows), like every other path's rows.
_CLIENT = SPAN_KIND_NAMES[SpanKind.CLIENT]
_UNSET, _ERROR = STATUS_NAMES[StatusCode.UNSET], STATUS_NAMES[StatusCode.ERROR]
_SPAN_NAME, _SPAN_ATTRIBUTES = TRACE_COLUMN_INDEX["SpanName"], TRACE_COLUMN_INDEX["SpanAttributes"]


@dataclass(frozen=True)
class Model:
    provider: str
    name: str
    latency_ms: float  # median of a call with typical output
    ttft_ms: float
    usd_per_1k_in: float
    usd_per_1k_out: float

    @property
    def entity(self) -> str:
        return f"{self.provider}/{self.name}"


MODELS = (
    Model("openai", "gpt-4o", 1400, 380, 0.0025, 0.010),
    Model("openai", "gpt-4o-mini", 700, 220, 0.00015, 0.0006),
    Model("anthropic", "claude-sonnet-4", 1800, 520, 0.003, 0.015),
    Model("gcp.gemini", "gemini-2.5-flash", 800, 260, 0.0003, 0.0025),
)


@dataclass(frozen=True)
class Service:
    name: str
    share: float  # of all calls
    models: tuple[tuple[int, float], ...]  # (index into MODELS, weight)
    team: str
    sessions: bool  # calls belong to multi-call agent sessions


SERVICES = (
    Service("chat-api", 0.40, ((0, 0.5), (1, 0.3), (2, 0.2)), "product", True),
    Service("search", 0.25, ((1, 0.6), (3, 0.4)), "search", False),
    Service("batch-summarizer", 0.15, ((1, 0.4), (3, 0.4), (0, 0.2)), "data", False),
    Service("support-agent", 0.20, ((2, 0.5), (0, 0.3), (3, 0.2)), "support", True),
)
FEATURES = ("summarize", "answer", "classify")
N_USERS = 24


@dataclass
class Injection:
    """One anomaly put into the traffic: ``kind`` from ``start`` for ``minutes``."""

    kind: str
    start: dt.datetime
    minutes: int
    target: str  # model index, provider, service name, user, property value or session id
    detector: str = ""
    entity: str = ""

    @property
    def end(self) -> dt.datetime:
        return self.start + dt.timedelta(minutes=self.minutes)

    def active(self, minute: dt.datetime) -> bool:
        return self.start <= minute < self.end


# kind -> (detector expected to catch it, track)
KINDS: dict[str, tuple[str, str]] = {
    "latency": ("latency_p95", "model"),
    "ttft": ("ttft_p95", "model"),
    "error_spike": ("error_rate", "model"),
    "rate_limit": ("rate_limit_burst", "model"),
    "new_model": ("model_drift", "model"),
    "model_gone": ("model_drift", "model"),
    "model_mismatch": ("model_drift", "model"),
    "traffic_drop": ("traffic_drop", "service"),
    "cost_surge": ("cost_surge", "service"),
    "runaway_agent": ("runaway_agent", "service"),
    "agent_loop": ("agent_loop", "service"),
    "safety_surge": ("safety_surge", "service"),
}


def schedule_injections(start: dt.datetime, days: float, *, seed: int = 7, warmup_hours: float = 12,
                        slot_minutes: int = 97) -> list[Injection]:
    """Anomalies of every kind at known times: two tracks, one injection per track per slot.

    The first ``warmup_hours`` stay clean so the detectors have a baseline. Kinds rotate
    round-robin on each track; targets rotate too (models, providers, services, users...).
    Slots of 97 minutes drift against the day, so an incident does not recur at the same
    time of day (which a seasonal baseline would rightly learn as normal).
    """
    rng = random.Random(seed)
    tracks = {track: [k for k, (_, t) in KINDS.items() if t == track] for track in ("model", "service")}
    injections: list[Injection] = []
    total = int(days * 24 * 60)
    new_model_no = 0
    for track_no, kinds in enumerate(tracks.values()):
        offset = int(warmup_hours * 60) + track_no * 20
        slot = 0
        while offset + slot_minutes <= total:
            kind = kinds[slot % len(kinds)]
            begin = start + dt.timedelta(minutes=offset + rng.randrange(0, 15))
            rotation = slot // len(kinds)
            inj = _make_injection(kind, begin, rotation, rng, new_model_no)
            if kind == "new_model":
                new_model_no += 1
            injections.append(inj)
            offset += slot_minutes
            slot += 1
    injections.sort(key=lambda i: i.start)
    return injections


def _make_injection(kind: str, begin: dt.datetime, rotation: int, rng: random.Random,
                    new_model_no: int) -> Injection:
    detector = KINDS[kind][0]
    if kind in ("latency", "ttft", "error_spike", "model_mismatch", "model_gone"):
        model = MODELS[rotation % len(MODELS)]
        minutes = {"latency": 30, "ttft": 30, "error_spike": 20, "model_mismatch": 30, "model_gone": 45}[kind]
        return Injection(kind, begin, minutes, str(MODELS.index(model)), detector, model.entity)
    if kind == "rate_limit":
        providers = sorted({m.provider for m in MODELS})
        provider = providers[rotation % len(providers)]
        return Injection(kind, begin, 20, provider, detector, provider)
    if kind == "new_model":
        name = f"experimental-model-{new_model_no}"
        return Injection(kind, begin, 30, name, detector, f"openai/{name}")
    if kind in ("traffic_drop", "safety_surge"):
        service = SERVICES[rotation % len(SERVICES)].name
        return Injection(kind, begin, 40 if kind == "traffic_drop" else 30, service, detector, f"service={service}")
    if kind == "cost_surge":
        if rotation % 2 == 0:
            user = f"user-{rng.randrange(0, N_USERS):02d}"
            return Injection(kind, begin, 30, user, detector, f"user={user}")
        feature = FEATURES[(rotation // 2) % len(FEATURES)]
        return Injection(kind, begin, 30, "feature:" + feature, detector, f"property.feature={feature}")
    if kind in ("runaway_agent", "agent_loop"):
        session = f"{kind}-{uuid.UUID(int=rng.randrange(0, 2**63)).hex[:12]}"
        return Injection(kind, begin, 15 if kind == "runaway_agent" else 20, session, detector, f"session={session}")
    raise ValueError(kind)


def daily_factor(minute: dt.datetime) -> float:
    """Relative traffic at ``minute``: a daily cycle peaking mid-afternoon UTC, lighter weekends."""
    hour = minute.hour + minute.minute / 60
    cycle = 0.3 + 0.7 * (0.5 + 0.5 * math.cos(2 * math.pi * (hour - 15) / 24))
    return cycle * (0.7 if minute.weekday() >= 5 else 1.0)


@dataclass
class _Session:
    sid: str
    service: Service
    user: str
    calls_left: int
    context: int
    model: int
    next_minute: int


@dataclass
class Generator:
    """Builds rows minute by minute; ``rows_for_minute`` is deterministic given the seed."""

    start: dt.datetime
    calls_per_minute: float = 20.0
    seed: int = 1
    injections: list[Injection] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # scalar draws: much faster than numpy's per call
        self.np_rng = np.random.default_rng(self.seed)  # Poisson counts
        self.sessions: list[_Session] = []
        self.session_no = 0
        self.users = [f"user-{i:02d}" for i in range(N_USERS)]
        self.user_weights = [1 / (i + 1) ** 0.8 for i in range(N_USERS)]

    # -- one call ------------------------------------------------------------------------
    def _call(self, ts_ns: int, service: Service, model_idx: int, user: str, *, session: str = "",
              input_tokens: int | None = None, active: list[Injection]) -> list[Any]:
        rng = self.rng
        model = MODELS[model_idx]
        model_name, provider = model.name, model.provider
        response_model = model_name + ("-2024-08-06" if model_name == "gpt-4o" else "")
        feature = FEATURES[rng.randrange(0, len(FEATURES))]
        in_tok = int(input_tokens if input_tokens is not None else rng.lognormvariate(math.log(700), 0.6))
        out_tok = int(rng.lognormvariate(math.log(220), 0.5))
        stream = rng.random() < 0.5
        latency = model.latency_ms * (0.6 + 0.4 * out_tok / 220) * rng.lognormvariate(0, 0.25)
        ttft = model.ttft_ms * rng.lognormvariate(0, 0.3) if stream else None
        status, http, error_type = _UNSET, 200, ""
        err_p, rl_p, findings = 0.01, 0.003, int(rng.random() < 0.02)
        for inj in active:
            k = inj.kind
            if k == "latency" and inj.target == str(model_idx):
                latency *= 3.0
            elif k == "ttft" and inj.target == str(model_idx) and ttft is not None:
                extra = ttft * 3.0
                ttft += extra
                latency += extra
            elif k == "error_spike" and inj.target == str(model_idx):
                err_p = 0.25
            elif k == "rate_limit" and inj.target == provider:
                rl_p = 0.35
            elif k == "model_mismatch" and inj.target == str(model_idx):
                response_model = "gpt-4o-mini" if model_name != "gpt-4o-mini" else "gpt-3.5-turbo"
            elif k == "safety_surge" and inj.target == service.name and rng.random() < 0.4:
                findings += 1 + rng.randrange(0, 3)
        r = rng.random()
        if r < rl_p:
            status, http, error_type = _ERROR, 429, "429"
        elif r < rl_p + err_p:
            status, http, error_type = _ERROR, 500 if rng.random() < 0.7 else 504, "500"
            latency *= 0.5
        if status == _ERROR:
            in_tok_rec, out_tok_rec, ttft = 0, 0, None
        else:
            in_tok_rec, out_tok_rec = in_tok, out_tok
        attrs: dict[str, str] = {
            sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_PROVIDER_NAME: provider,
            sc.GEN_AI_REQUEST_MODEL: model_name,
            sc.GEN_AI_REQUEST_STREAM: BOOL_STRINGS[stream],
            sc.HTTP_RESPONSE_STATUS_CODE: str(http),
            sc.GENOPS_USER_ID: user,
            sc.GENOPS_PROPERTY_PREFIX + "team": service.team,
            sc.GENOPS_PROPERTY_PREFIX + "feature": feature,
        }
        if status != _ERROR:
            attrs[sc.GEN_AI_RESPONSE_MODEL] = response_model
            attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = str(in_tok_rec)
            attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = str(out_tok_rec)
            cost = in_tok_rec / 1000 * model.usd_per_1k_in + out_tok_rec / 1000 * model.usd_per_1k_out
            attrs[sc.GENOPS_COST_USD] = repr(round(cost, 8))
        else:
            attrs[sc.ERROR_TYPE] = error_type
        if ttft is not None:
            attrs[sc.GENOPS_LATENCY_TTFT_MS] = f"{ttft:.3f}"
        if session:
            attrs[sc.GEN_AI_CONVERSATION_ID] = session
        if findings:
            attrs[sc.GENOPS_SAFETY_PII_COUNT] = str(findings)
        trace_id = f"{rng.getrandbits(128):032x}"
        return [  # in TRACE_COLUMNS order
            ts_ns, trace_id, f"{rng.getrandbits(64):016x}", "", "",
            f"chat {model_name}", _CLIENT, service.name, {SERVICE_NAME_KEY: service.name},
            DEMO_SCOPE, "", attrs, int(latency * 1e6), status, "",
            [], [], [], [], [], [], [],
        ]

    def _pick_model(self, service: Service, active: list[Injection]) -> int:
        indexes = [i for i, _ in service.models]
        weights = [w for _, w in service.models]
        for inj in active:
            if inj.kind == "model_gone" and int(inj.target) in indexes and len(indexes) > 1:
                weights[indexes.index(int(inj.target))] = 0.0
        return self.rng.choices(indexes, weights)[0]

    # -- one minute ----------------------------------------------------------------------
    def rows_for_minute(self, minute_no: int) -> list[list[Any]]:
        rng = self.rng
        minute = self.start + dt.timedelta(minutes=minute_no)
        base_ns = int(minute.replace(tzinfo=dt.UTC).timestamp()) * 1_000_000_000
        active = [inj for inj in self.injections if inj.active(minute)]
        factor = daily_factor(minute)
        rows: list[list[Any]] = []

        def ts() -> int:
            return base_ns + rng.randrange(0, 60_000_000_000)

        for service in SERVICES:
            if any(i.kind == "traffic_drop" and i.target == service.name for i in active):
                continue
            n = int(self.np_rng.poisson(self.calls_per_minute * service.share * factor))
            if service.sessions:
                # new sessions; their calls are spread over the next minutes
                for _ in range(int(self.np_rng.poisson(n / 4))):
                    self.session_no += 1
                    user = rng.choices(self.users, self.user_weights)[0]
                    self.sessions.append(_Session(
                        f"s-{self.seed}-{self.session_no}", service, user, rng.randrange(2, 7),
                        int(rng.lognormvariate(math.log(600), 0.4)), self._pick_model(service, active), minute_no,
                    ))
                continue
            for _ in range(n):
                user = rng.choices(self.users, self.user_weights)[0]
                rows.append(self._call(ts(), service, self._pick_model(service, active), user, active=active))
        still: list[_Session] = []
        for s in self.sessions:
            if s.next_minute <= minute_no:
                if any(i.kind == "traffic_drop" and i.target == s.service.name for i in active):
                    continue  # the service stopped calling: its sessions end
                model = s.model
                if any(i.kind == "model_gone" and i.target == str(model) for i in active):
                    model = self._pick_model(s.service, active)
                rows.append(self._call(ts(), s.service, model, s.user, session=s.sid, input_tokens=s.context,
                                       active=active))
                s.context += rng.randrange(150, 600)
                s.calls_left -= 1
                s.next_minute = minute_no + rng.randrange(1, 3)
            if s.calls_left > 0:
                still.append(s)
        self.sessions = still
        rows.extend(self._injected_rows(minute_no, minute, base_ns, active))
        return rows

    def _injected_rows(self, minute_no: int, minute: dt.datetime, base_ns: int,
                       active: list[Injection]) -> Iterator[list[Any]]:
        rng = self.rng
        gone = {int(i.target) for i in active if i.kind == "model_gone"}

        def model(preferred: int) -> int:  # injected calls also avoid a model that is "gone"
            return next(m for m in (preferred, *range(len(MODELS))) if m not in gone)

        for inj in active:
            if inj.kind == "new_model":
                service = SERVICES[0]
                for _ in range(3):
                    row = self._call(base_ns + rng.randrange(0, 60_000_000_000), service, 0, "user-00",
                                     active=[])
                    row[_SPAN_NAME] = f"chat {inj.target}"
                    row[_SPAN_ATTRIBUTES][sc.GEN_AI_REQUEST_MODEL] = inj.target
                    if sc.GEN_AI_RESPONSE_MODEL in row[_SPAN_ATTRIBUTES]:
                        row[_SPAN_ATTRIBUTES][sc.GEN_AI_RESPONSE_MODEL] = inj.target
                    yield row
            elif inj.kind == "runaway_agent":
                service = SERVICES[3]
                context = 2000 + (minute_no - _minute_no(self.start, inj.start)) * 3000
                for k in range(15):
                    yield self._call(base_ns + k * 4_000_000_000, service, model(2), "user-05", session=inj.target,
                                     input_tokens=context + k * 200, active=[])
            elif inj.kind == "cost_surge":
                # a user (or a feature) suddenly sending long-context, long-output calls
                service = SERVICES[1]
                for _ in range(3 if inj.target.startswith("user-") else 6):
                    # a user's surge is theirs alone; a feature's (a new prompt) is spread over users
                    user = inj.target if inj.target.startswith("user-") else rng.choices(self.users, self.user_weights)[0]
                    row = self._call(base_ns + rng.randrange(0, 60_000_000_000), service, model(2), user,
                                     input_tokens=int(rng.lognormvariate(math.log(6000), 0.3)), active=[])
                    if inj.target.startswith("feature:"):
                        row[_SPAN_ATTRIBUTES][sc.GENOPS_PROPERTY_PREFIX + "feature"] = inj.target.split(":", 1)[1]
                    yield row
            elif inj.kind == "agent_loop":
                service = SERVICES[3]
                for k in range(3):
                    yield self._call(base_ns + k * 20_000_000_000, service, model(0), "user-07", session=inj.target,
                                     input_tokens=4242, active=[])


def _minute_no(start: dt.datetime, t: dt.datetime) -> int:
    return int((t - start).total_seconds() // 60)


def generate(client: Any, database: str, start: dt.datetime, days: float, *, calls_per_minute: float = 20.0,
             seed: int = 1, injections: list[Injection] | None = None, batch_minutes: int = 720,
             progress: Callable[[int, int], None] | None = None) -> int:
    """Write ``days`` of traffic from ``start`` into ``{database}.otel_traces``; returns the row count.

    Inserts are batched (``batch_minutes`` of traffic per insert) so a week takes seconds.
    """
    start = start.replace(second=0, microsecond=0, tzinfo=None)
    gen = Generator(start, calls_per_minute, seed, list(injections or []))
    total_minutes = int(days * 24 * 60)
    written = 0
    batch: list[list[Any]] = []
    for minute_no in range(total_minutes):
        batch.extend(gen.rows_for_minute(minute_no))
        if (minute_no + 1) % batch_minutes == 0 or minute_no == total_minutes - 1:
            insert_rows(client, database, batch)
            written += len(batch)
            batch = []
            if progress:
                progress(minute_no + 1, total_minutes)
    return written


