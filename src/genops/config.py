"""All configuration in one place.

Precedence, lowest to highest: defaults < TOML file < ``GENOPS_*`` environment variables
< command-line flags. The TOML file is ``$GENOPS_CONFIG`` if set, else ``./genops.toml``
if it exists; its keys are the field names below (``port = 8080``).

A malformed value raises :class:`ConfigError` whose message names the setting, so the
CLI can print one clear line instead of a traceback.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from genops.safety_policy import validate_policy, validate_route_policies

ENV_PREFIX = "GENOPS_"


class ConfigError(ValueError):
    """A setting has a value GenOps cannot use."""


def _parse_int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"expected an integer from {lo} to {hi}, got {value}")
        return value

    return parse


def _parse_float(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(str(raw).strip())
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"expected a number from {lo} to {hi}, got {value}")
        return value

    return parse


def _parse_str(raw: str) -> str:
    return str(raw).strip()


def _parse_bool(raw: str) -> bool:
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        text = str(raw).strip().lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {raw!r}")
        return text

    return parse


def _parse_http_url(raw: str) -> str:
    text = str(raw).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"expected an http(s):// URL, got {raw!r}")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError(f"malformed port in {raw!r}") from None
    return text


def _parse_optional_http_url(raw: str) -> str:
    return "" if not str(raw).strip() else _parse_http_url(raw)


def _parse_url_template(placeholder: str) -> Callable[[str], str]:
    """An http(s) URL that may contain ``{placeholder}`` (e.g. in the host name)."""

    def parse(raw: str) -> str:
        text = str(raw).strip().rstrip("/")
        try:
            _parse_http_url(text.replace("{" + placeholder + "}", "x"))
        except ValueError:
            raise ValueError(f"expected an http(s):// URL (with {{{placeholder}}} where it varies), got {raw!r}") from None
        return text

    return parse


def _parse_host_list(raw: str) -> str:
    """Comma-separated host names (``host``, ``host:port`` or ``*.domain``); stored normalised."""
    hosts = []
    for part in str(raw).split(","):
        host = part.strip().lower()
        if not host:
            continue
        if "://" in host:
            host = urlsplit(host).netloc
        name = host[2:] if host.startswith("*.") else host
        if not name or any(c in name for c in "/?#@ "):
            raise ValueError(f"expected host names like api.example.com or *.example.com, got {part.strip()!r}")
        hosts.append(host)
    return ",".join(hosts)


def _parse_clickhouse_url(raw: str) -> str:
    """Empty or ``chdb://[path]`` selects the embedded store; http(s) selects a server."""
    text = str(raw).strip()
    if not text or text.startswith("chdb://"):
        return text
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(
            "expected http(s)://user:password@host:8123/ for a ClickHouse server, "
            f"or chdb://PATH (or empty) for the embedded store; got a value with scheme {parts.scheme!r}"
        )
    try:
        parts.port  # noqa: B018
    except ValueError:
        raise ValueError("malformed port in the ClickHouse URL") from None
    return text


def _parse_identifier(raw: str) -> str:
    text = str(raw).strip()
    if not text or not (text[0].isalpha() or text[0] == "_") or not all(c.isalnum() or c == "_" for c in text):
        raise ValueError(f"expected a database name of letters, digits and _, got {raw!r}")
    return text


_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_.{}-]+$")


def check_cluster_name(name: str) -> str:
    """``name`` if it can be spelled in ``ON CLUSTER '<name>'`` (letters, digits, ``_.-`` and macros)."""
    if not _CLUSTER_NAME.match(name):
        raise ValueError(f"expected a cluster name of letters, digits, _ . - (or a macro such as {{cluster}}), got {name!r}")
    return name


def _parse_cluster_name(raw: str) -> str:
    text = str(raw).strip()
    return check_cluster_name(text) if text else ""


def _parse_safety_policy(raw: str) -> str:
    return validate_policy(raw)


def _parse_safety_route_policy(raw: str) -> str:
    return validate_route_policies(raw)


def _setting(default: Any, parse: Callable[[str], Any], help: str) -> Any:
    return field(default=default, metadata={"parse": parse, "help": help})


@dataclass(frozen=True)
class Settings:
    """Every GenOps setting. The environment variable is ``GENOPS_`` + the upper-cased name."""

    host: str = _setting("127.0.0.1", _parse_str, "address the proxy listens on")
    port: int = _setting(8080, _parse_int(0, 65535), "port the proxy listens on")
    data_dir: str = _setting(
        "./.genops", _parse_str,
        "embedded store, spool files, tokens and local state (the directory 0700, its files 0600)",
    )
    clickhouse_url: str = _setting(
        "", _parse_clickhouse_url,
        "ClickHouse server URL, http(s)://user:password@host:8123/; empty = embedded chDB (chdb://PATH: embedded, "
        "at PATH)",
    )
    database: str = _setting("genops", _parse_identifier, "ClickHouse database for all GenOps tables")
    clickhouse_cluster: str = _setting(
        "", _parse_cluster_name,
        "ClickHouse cluster (a remote_servers name, or the {cluster} macro): migrations run ON CLUSTER, with "
        "Replicated*MergeTree _local tables and Distributed tables in front (docs/deploy.md); empty = one server",
    )
    retention_days: int = _setting(30, _parse_int(1, 36500), "TTL of raw spans in days")
    admin_token: str = _setting(
        "", _parse_str, "Bearer token of the SQL/admin endpoints; empty = generated into the data dir"
    )
    feedback_token: str = _setting(
        "", _parse_str, "token that may only write and read scores (POST/GET /genops/v1/feedback); generated if empty"
    )
    feedback_rate: float = _setting(
        100.0, _parse_float(0.1, 1e6),
        "scores per second each token may send to the feedback endpoint (burst: 10 s worth); beyond it 429 with "
        "Retry-After",
    )
    otlp_token: str = _setting(
        "", _parse_str,
        "Bearer token POST /v1/traces and the receiver's /metrics require; empty = none on loopback, generated into "
        "the data dir beyond it",
    )
    otlp_trusted_token: str = _setting(
        "", _parse_str,
        "Bearer token of trusted senders (GenOps proxies): a collector stores their spans as the proxy's own, a proxy "
        "with GENOPS_EXPORTER=otlp sends it; else <data dir>/otlp_trusted_token if that file exists; empty = none",
    )
    sql_timeout_s: float = _setting(30.0, _parse_float(0.1, 3600), "longest a user's SQL query may run")
    sql_max_result_bytes: int = _setting(
        64 * 1024 * 1024, _parse_int(1024, 1 << 40), "largest result of a user's SQL query (beyond it: truncated)"
    )
    sql_max_memory_bytes: int = _setting(
        1 << 30, _parse_int(1 << 20, 1 << 44), "memory a user's SQL query may use in ClickHouse"
    )
    sql_max_concurrent: int = _setting(2, _parse_int(1, 64), "user SQL queries run at once; more get a 429")
    sql_user: str = _setting(
        "genops_reader", _parse_identifier,
        "ClickHouse server: the read-only user `genops migrate --create-reader` creates and `genops sql` uses",
    )
    sql_password: str = _setting(
        "", _parse_str,
        "ClickHouse server: the read-only user's password; empty = the one `genops migrate --create-reader` "
        "generated into <data dir>/sql_password, else (no such user) the URL's own user",
    )
    openai_base_url: str = _setting("https://api.openai.com", _parse_http_url, "OpenAI upstream")
    anthropic_base_url: str = _setting("https://api.anthropic.com", _parse_http_url, "Anthropic upstream")
    gemini_base_url: str = _setting(
        "https://generativelanguage.googleapis.com", _parse_http_url, "Gemini API (Google AI Studio) upstream"
    )
    vertex_base_url: str = _setting(
        "https://{location}-aiplatform.googleapis.com", _parse_url_template("location"),
        "Vertex AI upstream; {location} is replaced by the request's location (global, us and eu get Google's hosts: "
        "aiplatform.googleapis.com, aiplatform.{us,eu}.rep.googleapis.com)",
    )
    azure_base_url: str = _setting(
        "https://{resource}.openai.azure.com", _parse_url_template("resource"),
        "Azure OpenAI upstream; {resource} is replaced by the resource name in /azure/{resource}/...",
    )
    upstream_base_url: str = _setting(
        "", _parse_optional_http_url,
        "one upstream for every provider whose own GENOPS_<PROVIDER>_BASE_URL is not set, laid out as "
        "`genops fake-upstream` serves them: OpenAI, Anthropic and Gemini at its root, Vertex AI at "
        "/vertex/{location}, Azure OpenAI at /azure/{resource} (offline: http://127.0.0.1:9100); empty = "
        "each provider's own default",
    )
    allowed_targets: str = _setting(
        "", _parse_host_list,
        "more hosts a GenOps-Target-Url may name, comma-separated: host (its standard port), host:port, "
        "*.domain[:port], [v6addr]:port",
    )
    otlp_endpoint: str = _setting(
        "", _parse_optional_http_url,
        "OTLP/HTTP collector: with GENOPS_EXPORTER=otlp where every span goes (spooled, retried), else an extra "
        "best-effort export",
    )
    exporter: str = _setting(
        "clickhouse", _parse_choice("clickhouse", "otlp"),
        "where genops serve stores its spans: clickhouse (the embedded or GENOPS_CLICKHOUSE_URL store) or otlp "
        "(only the collector at GENOPS_OTLP_ENDPOINT; no local store, see docs/scale-out.md)",
    )
    service_name: str = _setting("genops-proxy", _parse_str, "service.name of the proxy's own spans")
    max_body_bytes: int = _setting(
        32 * 1024 * 1024, _parse_int(1024, 1 << 34),
        "largest request body accepted; larger gets a 413 (Connection: close, span recorded), a Content-Length over "
        "it as soon as the headers arrive, before any body is read",
    )
    client_header_timeout_s: float = _setting(
        10.0, _parse_float(0.1, 3600),
        "time a connection has to send a request's complete headers, from its start or from the previous response "
        "on a kept-alive connection; then it is closed. Idle keep-alive connections close after it too: behind a load "
        "balancer that reuses connections, set it above the balancer's idle timeout (e.g. 65 for AWS ALB's 60 s)",
    )
    client_body_timeout_s: float = _setting(
        60.0, _parse_float(0.1, 86400),
        "longest pause while a client sends a request body; then 408 in the provider's shape (Connection: close, "
        "span recorded)",
    )
    upstream_timeout_s: float = _setting(
        600.0, _parse_float(0.001, 86400), "total time allowed for an upstream call (then 504)"
    )
    connect_timeout_s: float = _setting(10.0, _parse_float(0.001, 3600), "time allowed to connect upstream (then 502)")
    upstream_client: str = _setting(
        "native", _parse_choice("native", "aiohttp"),
        "HTTP client for upstream calls: native (GenOps's own HTTP/1.1 client, ~100 µs less CPU per call) or aiohttp "
        "(aiohttp.ClientSession, the reference behaviour, kept as a fallback; one conformance suite runs against both)",
    )
    http_server: str = _setting(
        "native", _parse_choice("native", "aiohttp"),
        "HTTP server of the proxy's public port: native (GenOps's own HTTP/1.1 server on httptools, ~30 µs less "
        "CPU per call; it hands the admin paths to aiohttp.web over loopback) or aiohttp (aiohttp.web, the "
        "reference behaviour, kept as a fallback; one conformance suite runs against both)",
    )
    dns_cache_ttl_s: float = _setting(
        10.0, _parse_float(0, 86400), "how long an upstream host's DNS answer is reused (0 = no cache)",
    )
    upstream_max_connections: int = _setting(
        0, _parse_int(0, 100_000),
        "open connections per upstream origin at most (0 = no limit); more calls wait for one within "
        "GENOPS_CONNECT_TIMEOUT_S",
    )
    stream_usage: str = _setting(
        "inject", _parse_choice("inject", "off"),
        "inject: ask OpenAI streams for usage, hiding the extra chunk from the client; off: do not ask",
    )
    export_batch_size: int = _setting(8192, _parse_int(1, 100_000), "spans per insert (ClickHouse favours few big inserts)")
    export_interval_ms: int = _setting(1000, _parse_int(10, 600_000), "longest a span waits before export")
    export_insert_interval_ms: int = _setting(
        5000, _parse_int(0, 600_000),
        "longest a spooled batch waits to share one insert with the batches after it: the store inserts once per "
        "interval (or per GENOPS_EXPORT_BATCH_SIZE spans) however many workers hand it batches, since an insert "
        "costs ClickHouse ~80 ms of CPU whatever its size; dashboards see spans within GENOPS_EXPORT_INTERVAL_MS "
        "plus this, and a query through genops sql inserts what waits first (0 = insert every batch as it comes)",
    )
    export_queue_size: int = _setting(65536, _parse_int(16, 10_000_000), "spans buffered in memory for export")
    export_enabled: bool = _setting(True, _parse_bool, "store the proxy's spans (false only for benchmarks)")
    export_timeout_s: float = _setting(
        10.0, _parse_float(0.1, 3600),
        "time allowed for one insert into a ClickHouse server; past it the batch is retried from the spool",
    )
    export_probe_interval_ms: int = _setting(
        500, _parse_int(50, 60_000),
        "while a failed insert waits for its retry, the store is pinged this often; once it answers again the "
        "spool drains at once (not after the rest of a backoff of up to 10 s)",
    )
    storage_boot_wait_s: float = _setting(
        15.0, _parse_float(0, 3600),
        "ClickHouse server: how long genops serve/collector wait at start for it to answer and migrate; after that "
        "(or at once when it refuses) they serve without it, spool spans, and migrate in the background",
    )
    spool_max_bytes: int = _setting(
        1 << 30, _parse_int(1 << 20, 1 << 44), "disk spool limit; beyond it the oldest spans are dropped",
    )
    spool_fsync: bool = _setting(False, _parse_bool, "fsync every spooled batch (survives power loss, costs disk syncs)")
    otlp_host: str = _setting("", _parse_str, "address of the OTLP/HTTP receiver; empty = the proxy's host")
    otlp_port: int = _setting(4318, _parse_int(0, 65535), "OTLP/HTTP receiver port (genops serve: 0 = no receiver)")
    otlp_max_body_bytes: int = _setting(
        20 * 1024 * 1024, _parse_int(1024, 1 << 34),
        "largest OTLP request after gunzip (inflated off the event loop, stopped at the limit); larger gets a 413",
    )
    otlp_decode: str = _setting("clickhouse", _parse_choice("clickhouse", "python"),
                                "who decodes OTLP protobuf spans: ClickHouse (fast) or the Python decoder")
    # Batches are also cut at 64 MiB (storage/pipeline.py): an insert stays one ClickHouse block.
    otlp_batch_spans: int = _setting(
        65536, _parse_int(1, 200_000),
        "spans per insert of OTLP protobuf that ClickHouse decodes (also cut at 64 MiB and every "
        "GENOPS_EXPORT_INTERVAL_MS; up to two batches wait in memory, beyond that the receiver answers 503)",
    )
    workers: int = _setting(1, _parse_int(1, 64), "proxy processes sharing the port (embedded store stays in one)")
    store_process: str = _setting(
        "auto", _parse_choice("auto", "separate", "inline"),
        "where the embedded store runs: separate = its own process, the proxy in a worker; inline = the proxy's "
        "process; auto = separate when embedded on 2+ cores",
    )
    store_nice: int = _setting(
        10, _parse_int(0, 19),
        "scheduling niceness (0-19) of the store process when the proxy runs in workers (Linux): on shared cores "
        "its inserts and merges yield to the proxy",
    )
    drain_delay_s: float = _setting(
        0.0, _parse_float(0, 3600),
        "on SIGTERM, how long /readyz fails before the listener closes, so load balancers stop sending new "
        "connections (Kubernetes: 5; see docs/operations.md)",
    )
    drain_timeout_s: float = _setting(
        30.0, _parse_float(0, 86400),
        "on SIGTERM, how long calls in flight (streams included) may take to finish once the listener is closed; "
        "then they are cancelled, and spans are flushed",
    )
    log_level: str = _setting("info", _parse_choice("debug", "info", "warning", "error"), "log level")
    log_format: str = _setting("json", _parse_choice("json", "text"), "structured JSON logs or plain text, on stderr")
    capture_headers: bool = _setting(False, _parse_bool, "record non-secret request headers on spans")
    jobs_in_serve: str = _setting(
        "auto", _parse_choice("auto", "on", "off"), "run the anomaly jobs inside genops serve (auto = when embedded)"
    )
    jobs_interval_s: float = _setting(60.0, _parse_float(1, 86400), "seconds between anomaly job passes")
    jobs_lag_s: float = _setting(120.0, _parse_float(0, 3600), "how long the jobs wait for late spans")
    alert_webhook_url: str = _setting(
        "", _parse_optional_http_url, "Slack-compatible webhook for anomaly alerts and canary rollbacks"
    )
    rollout_check_interval_s: float = _setting(
        30.0, _parse_float(1, 86400),
        "seconds between canary rollout checks in genops serve (each rolls back, advances or promotes; "
        "see docs/rollouts.md)",
    )
    alert_cooldown_s: float = _setting(1800.0, _parse_float(0, 604800), "at most one alert per anomaly key per this")
    alert_min_severity: str = _setting(
        "warning", _parse_choice("warning", "critical"), "lowest severity alerted (critical: page only on those)"
    )
    safety_policy: str = _setting(
        "annotate", _parse_safety_policy,
        "safety action for every call: annotate|redact|mask-upstream|block|off, or pii=...,secrets=...,injection=...",
    )
    safety_route_policy: str = _setting(
        "", _parse_safety_route_policy, "per-route safety policies, e.g. openai:secrets=block;vllm:block"
    )
    capture: str = _setting(
        "metadata", _parse_choice("none", "metadata", "full"),
        "content stored on spans: none (no content, no sizes), metadata (sizes, counts, findings) or full (also "
        "gen_ai.input/output.messages, redacted, capped)",
    )
    capture_max_chars: int = _setting(32768, _parse_int(256, 16 << 20), "size cap of each captured messages JSON")
    grafana_url: str = _setting("", _parse_optional_http_url, "Grafana for `genops dashboards push`")
    grafana_token: str = _setting("", _parse_str, "Grafana service-account token for `genops dashboards push`")

    # -- derived values -------------------------------------------------------------

    @property
    def data_path(self) -> Path:
        """The data directory, absolute."""
        return Path(self.data_dir).expanduser().resolve()

    @property
    def embedded(self) -> bool:
        """True when storage is the in-process chDB engine."""
        return not self.clickhouse_url or self.clickhouse_url.startswith("chdb://")

    @property
    def separate_store(self) -> bool:
        """Whether ``genops serve`` runs the proxy in worker process(es) and the store in the supervisor.

        Always with ``--workers`` > 1. Otherwise ``auto`` separates the embedded store when the
        machine has a second core for it (see docs/architecture.md); a ClickHouse server is
        already another process, so the proxy then inserts itself.
        """
        if self.workers > 1 or self.store_process == "separate":
            return True
        if self.store_process == "inline":
            return False
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return self.embedded and cores >= 2

    @property
    def chdb_path(self) -> Path:
        """Directory of the embedded engine's data."""
        if self.clickhouse_url.startswith("chdb://") and len(self.clickhouse_url) > len("chdb://"):
            return Path(self.clickhouse_url[len("chdb://") :]).expanduser().resolve()
        return self.data_path / "clickhouse"

    @property
    def spool_path(self) -> Path:
        """Directory of the durable export spool."""
        return self.data_path / "spool"

    @property
    def otlp_bind_host(self) -> str:
        """Where the OTLP receiver listens."""
        return self.otlp_host or self.host

    def storage_description(self) -> str:
        """Where data goes, for humans (never includes a password)."""
        if self.exporter == "otlp":
            return f"the collector at {self.otlp_endpoint} (GENOPS_EXPORTER=otlp: no store in this process)"
        if self.embedded:
            return f"embedded chDB at {self.chdb_path} (database {self.database})"
        parts = urlsplit(self.clickhouse_url)
        port = f":{parts.port}" if parts.port else ""
        return f"ClickHouse server {parts.scheme}://{parts.hostname}{port} (database {self.database})"

    def resolved_admin_token(self) -> str:
        """The admin token: the configured one, else one kept in the data directory (created on first use)."""
        return self.admin_token or self._stored_token("admin_token")

    def resolved_feedback_token(self) -> str:
        """The feedback-only token: the configured one, else one kept in the data directory."""
        return self.feedback_token or self._stored_token("feedback_token")

    @property
    def otlp_on_loopback(self) -> bool:
        """True when the OTLP receiver listens on a loopback address only."""
        return is_loopback_host(self.otlp_bind_host)

    def resolved_otlp_token(self) -> str:
        """The token the OTLP receiver requires, or "" when it needs none.

        A receiver that listens beyond loopback always requires one: the configured token,
        else one kept in the data directory (``otlp_token``, 0600), which agents then send
        as ``OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer <token>``.
        """
        if self.otlp_token:
            return self.otlp_token
        return "" if self.otlp_on_loopback else self._stored_token("otlp_token")

    def resolved_otlp_trusted_token(self) -> str:
        """The trusted senders' token: the configured one, else ``<data dir>/otlp_trusted_token`` if it
        exists (never created: trust is handed out on purpose), else "" (nobody is trusted)."""
        if self.otlp_trusted_token:
            return self.otlp_trusted_token
        try:
            return (self.data_path / "otlp_trusted_token").read_text().strip()
        except OSError:
            return ""

    def private_data_dir(self) -> Path:
        """Create the data directory readable by this user only, and make every file GenOps writes private.

        It holds stored prompts (chDB's parts), the spool and the tokens: the directory is
        0700 (an existing looser one is tightened) and the process umask becomes 077, so
        chDB's parts, spool files and tokens are created 0600 (directories 0700).
        """
        os.umask(0o077)
        path = self.data_path
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
        return path

    def _stored_token(self, name: str) -> str:
        """A random token kept in ``<data dir>/<name>`` (0600), created on first use."""
        path = self.data_path / name
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = secrets.token_urlsafe(24)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it meanwhile: use theirs
            return path.read_text().strip()
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        return token


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); False for 0.0.0.0, :: and names."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def env_name(name: str) -> str:
    """The environment variable that sets field ``name``."""
    return ENV_PREFIX + name.upper()


def config_file(env: Mapping[str, str]) -> Path | None:
    """The config file: ``$GENOPS_CONFIG`` (which must exist), else ``./genops.toml`` if there is one."""
    explicit = env.get(ENV_PREFIX + "CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"GENOPS_CONFIG: no such file {explicit!r}")
        return path
    default = Path("genops.toml")
    return default if default.is_file() else None


# Where each provider lives under GENOPS_UPSTREAM_BASE_URL: the paths `genops fake-upstream` serves it at.
PROVIDER_PATHS = {
    "openai_base_url": "",
    "anthropic_base_url": "",
    "gemini_base_url": "",
    "vertex_base_url": "/vertex/{location}",
    "azure_base_url": "/azure/{resource}",
}


def _default_provider_urls(values: dict[str, Any]) -> None:
    """With ``upstream_base_url`` set, every provider base URL not set on its own points under it."""
    base = values.get("upstream_base_url")
    if base:
        for name, path in PROVIDER_PATHS.items():
            values.setdefault(name, base + path)


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Build :class:`Settings` from defaults, the TOML file, the environment and ``overrides``.

    ``overrides`` are CLI flag values keyed by field name; ``None`` values are ignored.
    Raises :class:`ConfigError` naming the first malformed setting.
    """
    env = os.environ if env is None else env
    raw: dict[str, tuple[str, Any]] = {}  # name -> (where it came from, value)

    path = config_file(env)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
        data = data.get("genops", data)
        for key, value in data.items():
            if key == "routes":  # gateway routes: read by genops.routes, not settings
                continue
            if key not in FIELDS:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            raw[key] = (f"{path}: {key}", value)

    for name in FIELDS:
        value = env.get(env_name(name))
        if value is not None:
            raw[name] = (env_name(name), value)

    for name, value in (overrides or {}).items():
        if value is not None:
            if name not in FIELDS:
                raise ConfigError(f"unknown setting {name!r}")
            raw[name] = (f"--{name.replace('_', '-')}", value)

    values: dict[str, Any] = {}
    for name, (source, value) in raw.items():
        parse = FIELDS[name].metadata["parse"]
        try:
            values[name] = parse(value if not isinstance(value, bool) else str(value))
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    _default_provider_urls(values)
    settings = Settings(**values)
    if settings.feedback_token and settings.feedback_token == settings.admin_token:
        # the feedback token is handed to apps; the same value would hand them SQL over every prompt
        raise ConfigError("GENOPS_FEEDBACK_TOKEN: must differ from GENOPS_ADMIN_TOKEN")
    _check_otlp_export(settings)
    if settings.clickhouse_cluster and settings.embedded and settings.exporter != "otlp":  # otlp: no store here
        raise ConfigError("GENOPS_CLICKHOUSE_CLUSTER: needs a ClickHouse server (GENOPS_CLICKHOUSE_URL); "
                          "the embedded store is a single node")
    return settings


def _check_otlp_export(settings: Settings) -> None:
    """The scale-out settings make sense together (docs/scale-out.md)."""
    trusted = settings.otlp_trusted_token
    if trusted and len(trusted) < 16:
        raise ConfigError("GENOPS_OTLP_TRUSTED_TOKEN: use at least 16 characters (it lets a sender write as the proxy)")
    if trusted and trusted == settings.otlp_token:
        # every agent holding the ordinary token could then pose as a proxy
        raise ConfigError("GENOPS_OTLP_TRUSTED_TOKEN: must differ from GENOPS_OTLP_TOKEN")
    if settings.exporter == "otlp" and not settings.otlp_endpoint:
        raise ConfigError("GENOPS_EXPORTER=otlp: set GENOPS_OTLP_ENDPOINT to the collector's URL "
                          "(e.g. http://genops-collector:4318)")
    if settings.exporter == "otlp" and settings.jobs_in_serve == "on" and settings.embedded:
        raise ConfigError("GENOPS_JOBS_IN_SERVE=on: a proxy with GENOPS_EXPORTER=otlp has no store to run the "
                          "anomaly jobs on; run `genops jobs` where the store is, or set GENOPS_CLICKHOUSE_URL")


def extra_env(prefix: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables ``GENOPS_<prefix><NAME>=value`` as ``{name.lower(): value}``.

    For open-ended settings such as named upstreams (``GENOPS_UPSTREAM_VLLM=http://...``).
    """
    env = os.environ if env is None else env
    full = ENV_PREFIX + prefix
    fixed = {env_name(name) for name in FIELDS}  # e.g. GENOPS_UPSTREAM_TIMEOUT_S is a setting, not a name
    return {
        key[len(full) :].lower(): value
        for key, value in env.items()
        if key.startswith(full) and key != full and key not in fixed
    }


def named_upstreams(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """OpenAI-compatible upstreams ``GENOPS_UPSTREAM_<NAME>=url``, served as ``/u/<name>/v1/...``.

    Raises :class:`ConfigError` naming the variable of a malformed URL or name.
    """
    out = {}
    for name, value in sorted(extra_env("UPSTREAM_", env).items()):
        if f"upstream_{name}" in FIELDS:  # GENOPS_UPSTREAM_TIMEOUT_S is a setting, not an upstream
            continue
        variable = f"{ENV_PREFIX}UPSTREAM_{name.upper()}"
        if not all(c.isalnum() or c in "_-" for c in name):
            raise ConfigError(f"{variable}: the upstream name may only contain letters, digits, _ and -")
        try:
            out[name] = _parse_http_url(value)
        except ValueError as exc:
            raise ConfigError(f"{variable}: {exc}") from None
    return out
