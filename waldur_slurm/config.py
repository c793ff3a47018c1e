"""Configuration: one typed, validated object built once in ``main`` from the environment.

Nothing here runs at import time. ``load_settings`` reads a mapping (the process environment merged over
an optional ``.env`` file), checks every value, and raises ``ConfigError`` with one readable line that
names each bad variable and its value. Secrets (the API token, the Sentry DSN) never appear in messages.
"""

from __future__ import annotations

import difflib
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from waldur_slurm.domain.components import Component, ComponentsError, load_components
from waldur_slurm.domain import naming
from waldur_slurm.domain.urls import host_root
from waldur_slurm.domain.naming import MAX_ACCOUNT_LEN as MAX_ACCOUNT_NAME_LEN
from waldur_slurm.domain.urls import mask_url


class ConfigError(ValueError):
    """Invalid configuration. ``str()`` is a single line safe to print (no secrets)."""


@dataclass(frozen=True)
class Variable:
    name: str
    default: str | None  # None: no default (required, or optional and unset)
    help: str
    secret: bool = False
    required: bool = False


# The single list of every supported variable: the README table, --help and the env-file checks use it.
VARIABLES: tuple[Variable, ...] = (
    Variable("WALDUR_API_URL", None, "URL of the Waldur Mastermind API, with or without the trailing /api/", required=True),
    Variable("WALDUR_API_TOKEN", None, "token of the service provider user in Waldur (or use WALDUR_API_TOKEN_FILE)", secret=True, required=True),
    Variable("WALDUR_API_TOKEN_FILE", None, "file holding the API token; used when WALDUR_API_TOKEN is unset"),
    Variable("WALDUR_SYNC_DIRECTION", None, "pull (Waldur orders -> SLURM) or push (SLURM usage -> Waldur); required to run a daemon"),
    Variable("WALDUR_OFFERING_UUID", None, "UUID of the SLURM offering in Waldur", required=True),
    Variable("REQUESTS_VERIFY_SSL", "true", "verify the Waldur server's TLS certificate (true/false)"),
    Variable("REQUESTS_CA_BUNDLE", None, "path of a CA bundle (PEM) used to verify the Waldur server"),
    Variable("REQUESTS_TIMEOUT", "15", "timeout of one HTTP request to Waldur, in seconds"),
    Variable("SLURM_TRES_CONFIG_PATH", "config-components.yaml", "path of the TRES/components file"),
    Variable("SLURM_DEPLOYMENT_TYPE", "docker", "native (run sacctmgr/sacct here) or docker (docker exec in SLURM_CONTAINER_NAME)"),
    Variable("SLURM_CONTAINER_NAME", "slurmctld", "name of the SLURM head-node container (docker mode)"),
    Variable("SLURM_CUSTOMER_PREFIX", "hpc_", "prefix of customer accounts"),
    Variable("SLURM_PROJECT_PREFIX", "hpc_", "prefix of project accounts"),
    Variable("SLURM_ALLOCATION_PREFIX", "hpc_", "prefix of allocation accounts"),
    Variable("SLURM_ALLOCATION_NAME_MAX_LEN", "34", "maximum length of an allocation account name"),
    Variable("SLURM_DEFAULT_ACCOUNT", "waldur", "existing SLURM account under which customer accounts are created"),
    Variable("SLURM_CLUSTER_NAME", None, "cluster to manage when the accounting database serves several (default: the local cluster)"),
    Variable("SLURM_COMMAND_TIMEOUT", "60", "timeout of one SLURM command, in seconds"),
    Variable("SLURM_USAGE_TRES_SOURCE", "alloc", "usage from allocated (alloc: AllocTRES) or requested (req: ReqTRES) TRES"),
    Variable("SLURM_USAGE_COUNT_REQUEUES", "true", "count every attempt of a requeued job (sacct --duplicates)"),
    Variable("ENABLE_USER_HOMEDIR_ACCOUNT_CREATION", "false", "create home directories of newly added users with mkhomedir_helper"),
    Variable("SLURM_HOMEDIR_UMASK", "0077", "umask of created home directories (octal)"),
    Variable("SLURM_IGNORE_ACCOUNTS", None, "comma-separated SLURM accounts the agent never adds, removes or changes (membership, Terminate, limits, enforcement) and never adopts"),
    Variable("SLURM_IGNORE_USERS", None, "comma-separated SLURM users whose associations the agent never adds, removes or changes"),
    Variable("SLURM_DOWNSCALED_QOS", "waldur-downscaled", "QoS that the accounts of downscaled resources get (Waldur 8); created without limits when missing, set its limits or priority yourself"),
    Variable("SLURM_CANCEL_JOBS_OF_PAUSED", "false", "cancel the running and pending jobs of an account when its resource is paused (Waldur 8); by default they keep running"),
    Variable("SLURM_CANCEL_JOBS_OF_LEAVING_MEMBERS", "false", "cancel the running and pending jobs of a member leaving a project in that project's accounts, before the association is removed"),
    Variable("WALDUR_PULL_PERIOD_SECONDS", "120", "period of the pull (order processing) cycle"),
    Variable("WALDUR_MEMBERSHIP_PERIOD_SECONDS", "300", "period of the membership pass of the pull daemon"),
    Variable("WALDUR_PUSH_PERIOD_SECONDS", "3600", "period of the push (usage reporting) cycle"),
    Variable("WALDUR_PUSH_CONCURRENCY", "8", "how many Waldur writes the push daemon runs at once"),
    Variable("WALDUR_READ_CONCURRENCY", "8", "how many per-resource Waldur reads (project teams) the pull daemon runs at once"),
    Variable("WALDUR_ORDER_MAX_FAILED_CYCLES", "5", "pull cycles in a row in which the same step of an order may fail with a server error before the agent gives the order up (marks it erred where the server allows) and stops retrying it"),
    Variable("WALDUR_STATE_DIR", "/var/lib/waldur-slurm-agent", "directory of the agent's own small state: the associations it added, so that a login whose offering user was renamed is removed (kept in memory, with a warning, when the directory cannot be written)"),
    Variable("WALDUR_BILLING_TIMEZONE", "UTC", "timezone of the billing month (IANA name)"),
    Variable("WALDUR_HEARTBEAT_FILE", None, "file touched after every successful cycle (for health checks)"),
    Variable("WALDUR_METRICS_PORT", "0", "port of the Prometheus /metrics and /healthz endpoint; 0 disables it"),
    Variable("WALDUR_METRICS_ADDRESS", "127.0.0.1", "address the metrics endpoint binds to"),
    Variable("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
    Variable("LOG_FORMAT", "text", "text or json"),
    Variable("SENTRY_DSN", None, "Sentry Data Source Name; errors are reported to Sentry when set", secret=True),
    Variable("SENTRY_ENVIRONMENT", "production", "Sentry environment name"),
)
KNOWN_VARIABLES: frozenset[str] = frozenset(v.name for v in VARIABLES)
_DEFAULTS = {v.name: v.default for v in VARIABLES}

_NAME = re.compile(r"^[a-z0-9_-]*$")
# cluster and QoS names (account and user names: domain.naming)
_SLURM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


@dataclass(frozen=True)
class Settings:
    waldur_api_url: str  # host root, e.g. "https://waldur.example.com" (no /api/)
    waldur_api_token: str = field(repr=False)
    offering_uuid: str  # 32 lower-case hex digits
    sync_direction: str | None
    verify_ssl: bool
    ca_bundle: str | None
    http_timeout: float
    tres_config_path: str
    components: dict[str, Component]
    deployment_type: str
    container_name: str
    customer_prefix: str
    project_prefix: str
    allocation_prefix: str
    allocation_name_max_len: int
    default_account: str
    cluster_name: str | None
    slurm_command_timeout: float
    usage_tres_source: str
    usage_count_requeues: bool
    enable_homedir: bool
    homedir_umask: int
    pull_period: float
    membership_period: float
    push_period: float
    push_concurrency: int
    read_concurrency: int
    order_max_failed_cycles: int
    state_dir: str | None
    billing_timezone: ZoneInfo
    heartbeat_file: str | None
    metrics_port: int
    metrics_address: str
    log_level: str
    log_format: str
    sentry_dsn: str | None = field(repr=False)
    sentry_environment: str
    # set variables that look like ours but are not (typos): logged as warnings at start
    warnings: tuple[str, ...] = ()
    ignore_accounts: frozenset[str] = frozenset()
    ignore_users: frozenset[str] = frozenset()
    downscaled_qos: str = "waldur-downscaled"
    cancel_jobs_of_paused: bool = False
    cancel_jobs_of_leaving_members: bool = False

    def masked(self) -> list[tuple[str, str]]:
        """(name, value) pairs safe to show an operator: secrets are masked."""
        rows: list[tuple[str, str]] = []
        for f in fields(self):
            value: Any = getattr(self, f.name)
            if f.name in ("waldur_api_token", "sentry_dsn"):
                value = mask(value)
            elif f.name == "waldur_api_url":
                value = mask_url(value)
            elif f.name == "warnings":
                continue
            elif f.name == "components":
                value = ", ".join(value)
            rows.append((f.name, str(value)))
        return rows


def mask(secret: str | None) -> str:
    if not secret:
        return "(unset)"
    return "****" + (secret[-4:] if len(secret) >= 16 else "")


# SLURM's own clients read many SLURM_* variables (SLURM_CONF, SLURM_JOB_ID, SLURM_TIME_FORMAT, ...): only a
# name close to one of ours is taken for a typo. Every other WALDUR_* name is ours, so any unknown one is.
_TYPO_CUTOFF = 0.8
# SLURM's own variables that are close to one of ours but are not typos
SLURM_OWN_VARIABLES = frozenset({
    "SLURM_CLUSTERS", "SLURM_CONF", "SLURM_CONTAINER", "SLURM_ACCOUNT", "SLURM_TIME_FORMAT", "SLURM_COMMENT",
    "SLURM_CONSTRAINT", "SLURM_DEBUG", "SLURM_PROFILE", "SLURM_UMASK", "SLURM_WCKEY",
})


def unknown_variable_warnings(environ: Mapping[str, str]) -> list[str]:
    """One warning per set variable that looks like one of the agent's but is not, with the closest name."""
    ours = sorted(KNOWN_VARIABLES)
    warnings: list[str] = []
    for name in sorted(environ):
        if name in KNOWN_VARIABLES or name in SLURM_OWN_VARIABLES or not name.startswith(("WALDUR_", "SLURM_")):
            continue
        close = difflib.get_close_matches(name, ours, n=1, cutoff=_TYPO_CUTOFF)
        if close:
            warnings.append(f"{name} is not a known variable and is ignored; did you mean {close[0]}?")
        elif name.startswith("WALDUR_"):
            warnings.append(f"{name} is not a known variable and is ignored")
    return warnings


def read_environment(env_file: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The effective variables: the ``.env`` file (if any) overlaid by the process environment."""
    from dotenv import dotenv_values  # imported here: only main needs it

    merged: dict[str, str] = {}
    if env_file is not None:
        path = Path(env_file)
        if not path.is_file():
            raise ConfigError(f"--env-file {str(path)!r}: file not found")
        merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    elif Path(".env").is_file():
        merged.update({k: v for k, v in dotenv_values(".env").items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return merged


class _Reader:
    """Collects every problem so that one run reports all of them, on one line."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        self.errors: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None or value.strip() == "":
            return _DEFAULTS.get(name)
        return value.strip()

    def fail(self, name: str, value: str | None, why: str) -> None:
        shown = "" if value is None else f"={value!r}"
        self.errors.append(f"{name}{shown} {why}")

    def required(self, name: str, example: str) -> str:
        value = self.raw(name)
        if value is None:
            self.errors.append(f"{name} is required (e.g. {example})")
            return ""
        return value

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.raw(name) or ""
        if value.lower() not in choices:
            self.fail(name, value, "is invalid: expected " + " or ".join(repr(c) for c in choices))
            return choices[0]
        return value.lower()

    def boolean(self, name: str) -> bool:
        value = (self.raw(name) or "").lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        self.fail(name, value, "is invalid: expected true or false")
        return False

    def number(self, name: str, convert: Callable[[str], Any], low: float, high: float) -> Any:
        value = self.raw(name) or ""
        try:
            number = convert(value)
        except ValueError:
            kind = "an integer" if convert is int else "a number"
            self.fail(name, value, f"is invalid: expected {kind}")
            return convert(_DEFAULTS[name] or "0")
        if not low <= number <= high:
            self.fail(name, value, f"is out of range: expected {low:g}..{high:g}")
            return convert(_DEFAULTS[name] or "0")
        return number


def _name_list(r: _Reader, name: str, pattern: re.Pattern[str], what: str) -> frozenset[str]:
    """A comma-separated list of SLURM names (lower-cased, as SLURM stores them); each bad one is named."""
    text = r.raw(name) or ""
    found: set[str] = set()
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        if not pattern.match(item) or len(item) > MAX_ACCOUNT_NAME_LEN:
            r.fail(name, item, f"is invalid: every item must be {what}")
            continue
        found.add(item)
    return frozenset(found)


def load_settings(environ: Mapping[str, str], *, need_direction: bool = False) -> Settings:
    """Validate every variable; raise ConfigError listing all problems on one line."""
    r = _Reader(environ)

    url = r.required("WALDUR_API_URL", "https://waldur.example.com/api/")
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            r.fail("WALDUR_API_URL", mask_url(url), "is invalid: expected an http:// or https:// URL")

    token = environ.get("WALDUR_API_TOKEN", "").strip()
    token_file = r.raw("WALDUR_API_TOKEN_FILE")
    if not token and token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            r.fail("WALDUR_API_TOKEN_FILE", token_file, f"cannot be read: {exc.strerror or exc}")
        else:
            if not token:
                r.fail("WALDUR_API_TOKEN_FILE", token_file, "is empty")
    if not token and not token_file:
        r.errors.append("WALDUR_API_TOKEN is required (or WALDUR_API_TOKEN_FILE)")
    elif token and any(c.isspace() for c in token):
        r.errors.append("WALDUR_API_TOKEN is invalid: it contains white space")  # never echo the token

    offering = r.required("WALDUR_OFFERING_UUID", "e21a0f0030b447deb63bedf69db6742e")
    offering_hex = ""
    if offering:
        try:
            offering_hex = uuid.UUID(offering).hex
        except ValueError:
            r.fail("WALDUR_OFFERING_UUID", offering, "is invalid: expected a UUID")

    direction = r.raw("WALDUR_SYNC_DIRECTION")
    if direction is None:
        if need_direction:
            r.errors.append("WALDUR_SYNC_DIRECTION is required: expected 'pull' or 'push'")
    elif direction.lower() not in ("pull", "push"):
        r.fail("WALDUR_SYNC_DIRECTION", direction, "is invalid: expected 'pull' or 'push'")
        direction = None
    else:
        direction = direction.lower()

    verify_ssl = r.boolean("REQUESTS_VERIFY_SSL")
    ca_bundle = r.raw("REQUESTS_CA_BUNDLE")
    if ca_bundle and not os.access(ca_bundle, os.R_OK):
        r.fail("REQUESTS_CA_BUNDLE", ca_bundle, "is not a readable file")
    http_timeout = r.number("REQUESTS_TIMEOUT", float, 0.1, 3600)

    deployment = r.choice("SLURM_DEPLOYMENT_TYPE", ("docker", "native"))
    container = r.raw("SLURM_CONTAINER_NAME") or ""
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", container):
        r.fail("SLURM_CONTAINER_NAME", container, "is invalid: expected a container name")

    prefixes = {}
    for name in ("SLURM_CUSTOMER_PREFIX", "SLURM_PROJECT_PREFIX", "SLURM_ALLOCATION_PREFIX"):
        # One rule for every variable: empty means unset, i.e. the default (an empty prefix used to mean none).
        value = r.raw(name) or ""
        if not _NAME.match(value):
            r.fail(name, value, "is invalid: use lower-case letters, digits, '_' and '-'")
        elif value.startswith("-"):
            r.fail(name, value, "is invalid: a SLURM account name cannot start with '-'")
        elif name != "SLURM_ALLOCATION_PREFIX" and len(value) + 32 > MAX_ACCOUNT_NAME_LEN:
            # customer and project accounts are the prefix and a 32-hex UUID
            r.fail(name, value, f"is too long: the account names it makes exceed {MAX_ACCOUNT_NAME_LEN} characters")
        prefixes[name] = value

    max_len = r.number("SLURM_ALLOCATION_NAME_MAX_LEN", int, 8, 64)  # 64: the longest name the op layer accepts
    shortest = len(prefixes["SLURM_ALLOCATION_PREFIX"]) + 5 + 2  # prefix + uuid part + "_" + one letter
    if max_len < shortest:
        r.fail("SLURM_ALLOCATION_NAME_MAX_LEN", str(max_len), f"is too small for the prefix (SLURM_ALLOCATION_PREFIX={prefixes['SLURM_ALLOCATION_PREFIX']!r}): expected at least {shortest}")

    default_account = r.raw("SLURM_DEFAULT_ACCOUNT") or ""
    if not naming.is_account_name(default_account):
        r.fail("SLURM_DEFAULT_ACCOUNT", default_account, "is invalid: expected a SLURM account name ([a-z0-9_-])")

    ignore_accounts = _name_list(r, "SLURM_IGNORE_ACCOUNTS", naming.ACCOUNT_RE, "a SLURM account name ([a-z0-9_-])")
    ignore_users = _name_list(r, "SLURM_IGNORE_USERS", naming.USER_RE, "a SLURM user name ([a-z0-9_.-])")
    downscaled_qos = r.raw("SLURM_DOWNSCALED_QOS") or ""
    if not _SLURM_NAME.match(downscaled_qos) or len(downscaled_qos) > MAX_ACCOUNT_NAME_LEN:
        r.fail("SLURM_DOWNSCALED_QOS", downscaled_qos, "is invalid: expected a SLURM QoS name ([a-z0-9_-])")

    cluster_name = r.raw("SLURM_CLUSTER_NAME")
    if cluster_name is not None and not _SLURM_NAME.match(cluster_name):
        r.fail("SLURM_CLUSTER_NAME", cluster_name, "is invalid: expected a SLURM cluster name ([a-z0-9_-])")

    tres_path = r.raw("SLURM_TRES_CONFIG_PATH") or ""
    components: dict[str, Component] = {}
    try:
        components = load_components(tres_path)
    except ComponentsError as exc:
        r.errors.append(f"SLURM_TRES_CONFIG_PATH: {exc}")

    umask_text = r.raw("SLURM_HOMEDIR_UMASK") or ""
    try:
        umask = int(umask_text, 8)
        if not 0 <= umask <= 0o777:
            raise ValueError
    except ValueError:
        r.fail("SLURM_HOMEDIR_UMASK", umask_text, "is invalid: expected an octal umask such as 0077")
        umask = 0o077

    tz_name = r.raw("WALDUR_BILLING_TIMEZONE") or "UTC"
    try:
        timezone = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        r.fail("WALDUR_BILLING_TIMEZONE", tz_name, "is not a known timezone (e.g. UTC, Europe/Tallinn)")
        timezone = ZoneInfo("UTC")

    log_level = (r.raw("LOG_LEVEL") or "").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        r.fail("LOG_LEVEL", log_level, "is invalid: expected DEBUG, INFO, WARNING or ERROR")
        log_level = "INFO"

    sentry_dsn = r.raw("SENTRY_DSN")
    if sentry_dsn:
        parts = urlsplit(sentry_dsn)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            r.errors.append("SENTRY_DSN is invalid: expected an http(s) DSN URL")  # never echo the DSN

    settings_kwargs: dict[str, Any] = dict(
        waldur_api_url=host_root(url),
        waldur_api_token=token,
        offering_uuid=offering_hex,
        sync_direction=direction,
        verify_ssl=verify_ssl,
        ca_bundle=ca_bundle,
        http_timeout=http_timeout,
        tres_config_path=tres_path,
        components=components,
        deployment_type=deployment,
        container_name=container,
        customer_prefix=prefixes["SLURM_CUSTOMER_PREFIX"],
        project_prefix=prefixes["SLURM_PROJECT_PREFIX"],
        allocation_prefix=prefixes["SLURM_ALLOCATION_PREFIX"],
        allocation_name_max_len=max_len,
        default_account=default_account,
        cluster_name=cluster_name,
        slurm_command_timeout=r.number("SLURM_COMMAND_TIMEOUT", float, 1, 3600),
        usage_tres_source=r.choice("SLURM_USAGE_TRES_SOURCE", ("alloc", "req")),
        usage_count_requeues=r.boolean("SLURM_USAGE_COUNT_REQUEUES"),
        enable_homedir=r.boolean("ENABLE_USER_HOMEDIR_ACCOUNT_CREATION"),
        homedir_umask=umask,
        pull_period=r.number("WALDUR_PULL_PERIOD_SECONDS", float, 1, 86400),
        membership_period=r.number("WALDUR_MEMBERSHIP_PERIOD_SECONDS", float, 1, 86400),
        push_period=r.number("WALDUR_PUSH_PERIOD_SECONDS", float, 1, 86400),
        push_concurrency=r.number("WALDUR_PUSH_CONCURRENCY", int, 1, 64),
        read_concurrency=r.number("WALDUR_READ_CONCURRENCY", int, 1, 64),
        order_max_failed_cycles=r.number("WALDUR_ORDER_MAX_FAILED_CYCLES", int, 1, 1000),
        state_dir=r.raw("WALDUR_STATE_DIR"),
        billing_timezone=timezone,
        heartbeat_file=r.raw("WALDUR_HEARTBEAT_FILE"),
        metrics_port=r.number("WALDUR_METRICS_PORT", int, 0, 65535),
        metrics_address=r.raw("WALDUR_METRICS_ADDRESS") or "127.0.0.1",
        log_level=log_level,
        log_format=r.choice("LOG_FORMAT", ("text", "json")),
        sentry_dsn=sentry_dsn,
        sentry_environment=r.raw("SENTRY_ENVIRONMENT") or "production",
        warnings=tuple(unknown_variable_warnings(environ)),
        ignore_accounts=ignore_accounts,
        ignore_users=ignore_users,
        downscaled_qos=downscaled_qos,
        cancel_jobs_of_paused=r.boolean("SLURM_CANCEL_JOBS_OF_PAUSED"),
        cancel_jobs_of_leaving_members=r.boolean("SLURM_CANCEL_JOBS_OF_LEAVING_MEMBERS"),
    )
    if r.errors:
        raise ConfigError("configuration error: " + "; ".join(r.errors))
    return Settings(**settings_kwargs)
