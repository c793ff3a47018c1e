"""Configuration parsing and validation: pure, no I/O beyond temporary files."""

from __future__ import annotations

from pathlib import Path

import pytest

from waldur_slurm.config import KNOWN_VARIABLES, VARIABLES, ConfigError, load_settings, read_environment

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = str(REPO / "config-components.yaml.example")
TOKEN = "9e1132b9616ebfe943ddf632ca32bbb7e1109a32"


def env(**overrides: str) -> dict[str, str]:
    base = {
        "WALDUR_API_URL": "http://localhost:8081/api/",
        "WALDUR_API_TOKEN": TOKEN,
        "WALDUR_OFFERING_UUID": "e21a0f00-30b4-47de-b63b-edf69db6742e",
        "WALDUR_SYNC_DIRECTION": "pull",
        "SLURM_TRES_CONFIG_PATH": EXAMPLE,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def error_of(environ: dict[str, str], **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(environ, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert TOKEN not in message
    return message


def test_defaults_match_the_original_readme():
    s = load_settings(env())
    assert s.deployment_type == "docker"
    assert (s.customer_prefix, s.project_prefix, s.allocation_prefix) == ("hpc_", "hpc_", "hpc_")
    assert s.allocation_name_max_len == 34
    assert s.default_account == "waldur"
    assert s.container_name == "slurmctld"
    assert s.verify_ssl is True
    assert s.enable_homedir is False
    assert s.pull_period == 120 and s.push_period == 3600 and s.membership_period == 300
    assert s.http_timeout == 15
    assert s.offering_uuid == "e21a0f0030b447deb63bedf69db6742e"
    assert str(s.billing_timezone) == "UTC"
    assert s.usage_tres_source == "alloc" and s.usage_count_requeues is True
    assert s.homedir_umask == 0o077


@pytest.mark.parametrize("url", ["http://localhost:8081/api/", "http://localhost:8081/api", "http://localhost:8081/", "http://localhost:8081"])
def test_api_url_with_and_without_api_suffix(url):
    assert load_settings(env(WALDUR_API_URL=url)).waldur_api_url == "http://localhost:8081"


def test_api_url_suffix_is_removed_as_a_suffix_not_as_characters():
    # rstrip("/api") would eat the trailing "pi" of "/waldur-api"
    assert load_settings(env(WALDUR_API_URL="https://h/waldur-api/api/")).waldur_api_url == "https://h/waldur-api"


def test_max_len_from_environment_is_an_integer():  # original bug B17
    assert load_settings(env(SLURM_ALLOCATION_NAME_MAX_LEN="40")).allocation_name_max_len == 40


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"WALDUR_API_URL": None}, "WALDUR_API_URL is required"),
        ({"WALDUR_API_TOKEN": None}, "WALDUR_API_TOKEN is required"),
        ({"WALDUR_OFFERING_UUID": None}, "WALDUR_OFFERING_UUID is required"),
        ({"WALDUR_SYNC_DIRECTION": "sideways"}, "WALDUR_SYNC_DIRECTION='sideways' is invalid"),
        ({"SLURM_DEPLOYMENT_TYPE": "k8s"}, "SLURM_DEPLOYMENT_TYPE='k8s' is invalid: expected 'docker' or 'native'"),
        ({"SLURM_ALLOCATION_NAME_MAX_LEN": "long"}, "SLURM_ALLOCATION_NAME_MAX_LEN='long' is invalid: expected an integer"),
        ({"SLURM_ALLOCATION_NAME_MAX_LEN": "5"}, "SLURM_ALLOCATION_NAME_MAX_LEN='5' is out of range"),
        ({"SLURM_ALLOCATION_NAME_MAX_LEN": "65"}, "SLURM_ALLOCATION_NAME_MAX_LEN='65' is out of range: expected 8..64"),
        ({"WALDUR_API_URL": "ftp://x/api/"}, "WALDUR_API_URL='ftp://x/api/' is invalid: expected an http:// or https:// URL"),
        ({"WALDUR_API_URL": "localhost:8081"}, "WALDUR_API_URL='localhost:8081' is invalid"),
        ({"WALDUR_OFFERING_UUID": "not-a-uuid"}, "WALDUR_OFFERING_UUID='not-a-uuid' is invalid: expected a UUID"),
        ({"REQUESTS_VERIFY_SSL": "maybe"}, "REQUESTS_VERIFY_SSL='maybe' is invalid"),
        ({"SLURM_TRES_CONFIG_PATH": "/nonexistent/tres.yaml"}, "/nonexistent/tres.yaml: file not found"),
        ({"SLURM_DEFAULT_ACCOUNT": "bad name"}, "SLURM_DEFAULT_ACCOUNT='bad name' is invalid"),
        ({"SLURM_ALLOCATION_PREFIX": "hpc=x"}, "SLURM_ALLOCATION_PREFIX='hpc=x' is invalid"),
        ({"WALDUR_BILLING_TIMEZONE": "Mars/Olympus"}, "WALDUR_BILLING_TIMEZONE='Mars/Olympus' is not a known timezone"),
        ({"SLURM_HOMEDIR_UMASK": "999"}, "SLURM_HOMEDIR_UMASK='999' is invalid"),
        ({"WALDUR_PUSH_CONCURRENCY": "0"}, "WALDUR_PUSH_CONCURRENCY='0' is out of range"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' is invalid"),
        ({"REQUESTS_CA_BUNDLE": "/nonexistent.pem"}, "REQUESTS_CA_BUNDLE='/nonexistent.pem' is not a readable file"),
    ],
)
def test_each_bad_value_is_named_with_its_value(overrides, expected):
    assert expected in error_of(env(**overrides))


def test_all_problems_are_reported_at_once():
    message = error_of(env(SLURM_DEPLOYMENT_TYPE="k8s", WALDUR_SYNC_DIRECTION="up"))
    assert "SLURM_DEPLOYMENT_TYPE" in message and "WALDUR_SYNC_DIRECTION" in message


def test_direction_is_required_only_for_the_daemons():
    assert load_settings(env(WALDUR_SYNC_DIRECTION=None)).sync_direction is None
    assert "WALDUR_SYNC_DIRECTION is required" in error_of(env(WALDUR_SYNC_DIRECTION=None), need_direction=True)


def test_secrets_never_appear_in_errors_or_masked_output():
    dsn = "https://abcdef0123456789@sentry.example.com/42"
    message = error_of(env(WALDUR_API_TOKEN="has space" + TOKEN, SENTRY_DSN="not a url " + TOKEN))
    assert "WALDUR_API_TOKEN is invalid" in message and "SENTRY_DSN is invalid" in message
    s = load_settings(env(SENTRY_DSN=dsn))
    shown = repr(s) + str(s.masked())
    assert TOKEN not in shown and dsn not in shown and "abcdef0123456789" not in shown


def test_token_from_file(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    s = load_settings(env(WALDUR_API_TOKEN=None, WALDUR_API_TOKEN_FILE=str(token_file)))
    assert s.waldur_api_token == TOKEN
    assert "WALDUR_API_TOKEN_FILE='/nonexistent' cannot be read" in error_of(
        env(WALDUR_API_TOKEN=None, WALDUR_API_TOKEN_FILE="/nonexistent")
    )


def test_env_file_is_read_and_process_environment_wins(tmp_path):
    env_file = tmp_path / "agent.env"
    env_file.write_text("WALDUR_SYNC_DIRECTION=push # comment\nSLURM_DEPLOYMENT_TYPE=native\n")
    merged = read_environment(env_file, environ={"SLURM_DEPLOYMENT_TYPE": "docker"})
    assert merged["WALDUR_SYNC_DIRECTION"] == "push"
    assert merged["SLURM_DEPLOYMENT_TYPE"] == "docker"
    with pytest.raises(ConfigError, match="file not found"):
        read_environment(tmp_path / "missing.env", environ={})


def test_every_variable_is_documented_in_the_readme():
    readme = (REPO / "README.md").read_text()
    missing = [v.name for v in VARIABLES if f"`{v.name}`" not in readme]
    assert not missing, f"README configuration table lacks {missing}"
    assert len(KNOWN_VARIABLES) == len(VARIABLES)


def test_cluster_name_is_optional_and_validated():
    assert load_settings(env()).cluster_name is None
    assert load_settings(env(SLURM_CLUSTER_NAME="cluster2")).cluster_name == "cluster2"
    assert "SLURM_CLUSTER_NAME='a b' is invalid" in error_of(env(SLURM_CLUSTER_NAME="a b"))
