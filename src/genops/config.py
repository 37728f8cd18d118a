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
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

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


def _parse_safety_policy(raw: str) -> str:
    from genops.proxy.safety.policy import validate_policy

    return validate_policy(raw)


def _parse_safety_route_policy(raw: str) -> str:
    from genops.proxy.safety.policy import validate_route_policies

    return validate_route_policies(raw)


def _setting(default: Any, parse: Callable[[str], Any], help: str) -> Any:
    return field(default=default, metadata={"parse": parse, "help": help})


@dataclass(frozen=True)
class Settings:
    """Every GenOps setting. The environment variable is ``GENOPS_`` + the upper-cased name."""

    host: str = _setting("127.0.0.1", _parse_str, "address the proxy listens on")
    port: int = _setting(8080, _parse_int(0, 65535), "port the proxy listens on")
    data_dir: str = _setting("./.genops", _parse_str, "embedded store, spool files and local state")
    clickhouse_url: str = _setting("", _parse_clickhouse_url, "ClickHouse server URL; empty = embedded chDB")
    database: str = _setting("genops", _parse_identifier, "ClickHouse database for all GenOps tables")
    retention_days: int = _setting(30, _parse_int(1, 36500), "TTL of raw spans in days")
    admin_token: str = _setting("", _parse_str, "token for the SQL/admin endpoints; generated if empty")
    feedback_token: str = _setting(
        "", _parse_str, "token that may only write and read scores (POST/GET /genops/v1/feedback); generated if empty"
    )
    feedback_rate: float = _setting(
        100.0, _parse_float(0.1, 1e6), "scores per second each token may send to the feedback endpoint (burst: 10 s worth)"
    )
    otlp_token: str = _setting(
        "", _parse_str,
        "Bearer token the OTLP receiver requires; empty = open on loopback, generated into the data dir beyond it",
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
        "", _parse_str, "ClickHouse server: the read-only user's password; empty = the admin URL's user is used"
    )
    openai_base_url: str = _setting("https://api.openai.com", _parse_http_url, "OpenAI upstream")
    anthropic_base_url: str = _setting("https://api.anthropic.com", _parse_http_url, "Anthropic upstream")
    gemini_base_url: str = _setting(
        "https://generativelanguage.googleapis.com", _parse_http_url, "Gemini API (Google AI Studio) upstream"
    )
    vertex_base_url: str = _setting(
        "https://{location}-aiplatform.googleapis.com", _parse_url_template("location"),
        "Vertex AI upstream; {location} is replaced by the request's location (global: aiplatform.googleapis.com)",
    )
    azure_base_url: str = _setting(
        "https://{resource}.openai.azure.com", _parse_url_template("resource"),
        "Azure OpenAI upstream; {resource} is replaced by the resource name in /azure/{resource}/...",
    )
    allowed_targets: str = _setting(
        "", _parse_host_list, "extra hosts (comma-separated, *.domain allowed) a GenOps-Target-Url may point at"
    )
    otlp_endpoint: str = _setting("", _parse_optional_http_url, "also export spans by OTLP/HTTP to this collector")
    service_name: str = _setting("genops-proxy", _parse_str, "service.name of the proxy's own spans")
    max_body_bytes: int = _setting(32 * 1024 * 1024, _parse_int(1024, 1 << 34), "largest request body accepted")
    client_header_timeout_s: float = _setting(
        10.0, _parse_float(0.1, 3600), "time a client has to send a request's headers (then the connection is closed)"
    )
    client_body_timeout_s: float = _setting(
        60.0, _parse_float(0.1, 86400), "longest pause while a client sends a request body (then 408)"
    )
    upstream_timeout_s: float = _setting(600.0, _parse_float(0.001, 86400), "total time allowed for an upstream call")
    connect_timeout_s: float = _setting(10.0, _parse_float(0.001, 3600), "time allowed to connect upstream")
    upstream_client: str = _setting(
        "native", _parse_choice("native", "aiohttp"),
        "HTTP client for upstream calls: native (GenOps's own HTTP/1.1 client, less CPU) or aiohttp (the reference)",
    )
    dns_cache_ttl_s: float = _setting(10.0, _parse_float(0, 86400), "how long an upstream host's DNS answer is reused (0 = no cache)")
    upstream_max_connections: int = _setting(
        0, _parse_int(0, 100_000), "open connections per upstream origin at most (0 = no limit); more calls wait for one"
    )
    stream_usage: str = _setting(
        "inject", _parse_choice("inject", "off"), "ask OpenAI streams for usage (hidden from the client)"
    )
    export_batch_size: int = _setting(8192, _parse_int(1, 100_000), "spans per insert (ClickHouse favours few big inserts)")
    export_interval_ms: int = _setting(1000, _parse_int(10, 600_000), "longest a span waits before export")
    export_queue_size: int = _setting(65536, _parse_int(16, 10_000_000), "spans buffered in memory for export")
    export_enabled: bool = _setting(True, _parse_bool, "store the proxy's spans (false only for benchmarks)")
    export_timeout_s: float = _setting(10.0, _parse_float(0.1, 3600), "time allowed for one insert into a ClickHouse server")
    spool_max_bytes: int = _setting(1 << 30, _parse_int(1 << 20, 1 << 44), "disk spool limit; beyond it the oldest spans are dropped")
    spool_fsync: bool = _setting(False, _parse_bool, "fsync every spooled batch (survives power loss, costs disk syncs)")
    otlp_host: str = _setting("", _parse_str, "address of the OTLP/HTTP receiver; empty = the proxy's host")
    otlp_port: int = _setting(4318, _parse_int(0, 65535), "OTLP/HTTP receiver port (genops serve: 0 = no receiver)")
    otlp_max_body_bytes: int = _setting(20 * 1024 * 1024, _parse_int(1024, 1 << 34), "largest OTLP request, after gunzip")
    otlp_decode: str = _setting("clickhouse", _parse_choice("clickhouse", "python"),
                                "who decodes OTLP protobuf spans: ClickHouse (fast) or the Python decoder")
    # Batches are also cut at 64 MiB (storage/pipeline.py): an insert stays one ClickHouse block.
    otlp_batch_spans: int = _setting(65536, _parse_int(1, 200_000),
                                     "spans per insert of OTLP protobuf that ClickHouse decodes (up to two batches are held in memory)")
    workers: int = _setting(1, _parse_int(1, 64), "proxy processes sharing the port (embedded store stays in one)")
    store_process: str = _setting(
        "auto", _parse_choice("auto", "separate", "inline"),
        "where the embedded store runs: separate = its own process, the proxy in a worker; inline = the proxy's "
        "process; auto = separate when embedded on 2+ cores",
    )
    store_nice: int = _setting(
        10, _parse_int(0, 19),
        "scheduling niceness of the store process when the proxy runs in workers (Linux): on shared cores "
        "its inserts and merges yield to the proxy",
    )
    log_level: str = _setting("info", _parse_choice("debug", "info", "warning", "error"), "log level")
    log_format: str = _setting("json", _parse_choice("json", "text"), "structured JSON logs or plain text")
    capture_headers: bool = _setting(False, _parse_bool, "record non-secret request headers on spans")
    jobs_in_serve: str = _setting(
        "auto", _parse_choice("auto", "on", "off"), "run the anomaly jobs inside genops serve (auto = when embedded)"
    )
    jobs_interval_s: float = _setting(60.0, _parse_float(1, 86400), "seconds between anomaly job passes")
    jobs_lag_s: float = _setting(120.0, _parse_float(0, 3600), "how long the jobs wait for late spans")
    alert_webhook_url: str = _setting("", _parse_optional_http_url, "Slack-compatible webhook for anomaly alerts")
    alert_cooldown_s: float = _setting(1800.0, _parse_float(0, 604800), "at most one alert per anomaly key per this")
    alert_min_severity: str = _setting("warning", _parse_choice("warning", "critical"), "lowest severity alerted")
    safety_policy: str = _setting(
        "annotate", _parse_safety_policy,
        "safety action for every call: annotate|redact|mask-upstream|block|off, or pii=...,secrets=...,injection=...",
    )
    safety_route_policy: str = _setting(
        "", _parse_safety_route_policy, "per-route safety policies, e.g. openai:secrets=block;vllm:block"
    )
    capture: str = _setting(
        "metadata", _parse_choice("none", "metadata", "full"), "content stored on spans: none|metadata|full"
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
        machine has a second core for it (see README, "Architecture"); a ClickHouse server is
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


def _config_file(env: Mapping[str, str]) -> Path | None:
    explicit = env.get(ENV_PREFIX + "CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"GENOPS_CONFIG: no such file {explicit!r}")
        return path
    default = Path("genops.toml")
    return default if default.is_file() else None


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

    path = _config_file(env)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
        data = data.get("genops", data)
        for key, value in data.items():
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
    settings = Settings(**values)
    if settings.feedback_token and settings.feedback_token == settings.admin_token:
        # the feedback token is handed to apps; the same value would hand them SQL over every prompt
        raise ConfigError("GENOPS_FEEDBACK_TOKEN: must differ from GENOPS_ADMIN_TOKEN")
    return settings


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
