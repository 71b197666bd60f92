"""Settings from GRANTFLOW_* variables, the master key file, and what `grantflow config` shows."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from grantflow.config import Settings, load_settings, master_key
from grantflow.errors import ConfigurationError
from tests.support.processes import grantflow_env, run_grantflow


def _key(fill: bytes = b"k", size: int = 32) -> str:
    return base64.urlsafe_b64encode(fill * size).decode()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GRANTFLOW_* variable of the developer's shell leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("GRANTFLOW_"):
            monkeypatch.delenv(name)


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "var" / "secret.key"
    monkeypatch.setenv("GRANTFLOW_SECRET_KEY_FILE", str(path))
    return path


def test_defaults_are_valid() -> None:
    """With no variables set, the settings load with the documented defaults."""
    settings = load_settings()
    assert settings.database_url == "sqlite:///./var/grantflow.db"
    assert settings.log_level == "info"
    assert settings.port == 8000


def test_variables_are_read_and_postgresql_gets_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    """Variables override defaults; the log level is case-insensitive; postgresql uses psycopg."""
    monkeypatch.setenv("GRANTFLOW_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("GRANTFLOW_PORT", "9001")
    monkeypatch.setenv("GRANTFLOW_DATABASE_URL", "postgresql://gf@db.internal:5433/gf")
    settings = load_settings()
    assert (settings.log_level, settings.port) == ("debug", 9001)
    assert settings.database.drivername == "postgresql+psycopg"
    assert settings.database.host == "db.internal"


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("GRANTFLOW_LOG_LEVEL", "loud", "'debug', 'info', 'warning', 'error' or 'critical'"),
        ("GRANTFLOW_DATABASE_URL", "not a url", "is not a database URL"),
        ("GRANTFLOW_DATABASE_URL", "mysql://gf@127.0.0.1/gf", "'mysql' is not supported"),
        ("GRANTFLOW_DATABASE_URL", "postgresql:///gf", "a postgresql URL needs a host"),
        ("GRANTFLOW_PORT", "eighty", "valid integer"),
        ("GRANTFLOW_PORT", "70000", "less than or equal to 65535"),
        ("GRANTFLOW_PORT", "0", "greater than or equal to 1"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragment: str
) -> None:
    """A bad value is a ConfigurationError whose one-line message starts with the variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = caught.value.message
    assert message.startswith(f"{variable}: ")
    assert fragment in message
    assert "\n" not in message
    assert caught.value.next_action is None


def test_cli_reports_a_bad_variable_in_one_line_and_exits_2(tmp_path: Path) -> None:
    """`grantflow config show` with a bad level prints exactly one error line and exits 2."""
    result = run_grantflow("config", "show", env=grantflow_env(log_level="loud"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("error:")] == [
        "error: GRANTFLOW_LOG_LEVEL: Input should be 'debug', 'info', 'warning', 'error' "
        "or 'critical'"
    ]
    assert len(lines) == 1


def test_master_key_is_generated_once_with_mode_0600(key_file: Path) -> None:
    """An absent key file is created private, with a warning event, and reused after."""
    with capture_logs() as events:
        key = master_key(load_settings())
    assert len(key) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert base64.urlsafe_b64decode(key_file.read_text().strip()) == key
    generated = [e for e in events if e["event"] == "config.secret_key.generated"]
    assert len(generated) == 1
    assert generated[0]["log_level"] == "warning"
    assert generated[0]["path"] == str(key_file)

    with capture_logs() as again:
        assert master_key(load_settings()) == key
    assert again == []


@pytest.mark.parametrize("content", [_key(size=16), "not base64 at all!", ""])
def test_master_key_file_of_the_wrong_length_is_refused(key_file: Path, content: str) -> None:
    """A key file that does not hold 32 base64 bytes is refused, naming the variable."""
    key_file.parent.mkdir(parents=True)
    key_file.write_text(content + "\n")
    with pytest.raises(ConfigurationError) as caught:
        master_key(load_settings())
    assert caught.value.message == (
        "GRANTFLOW_SECRET_KEY_FILE: the master key must be 32 bytes, base64-encoded"
    )
    assert caught.value.next_action is not None
    assert "urlsafe_b64encode(os.urandom(32))" in caught.value.next_action
    assert key_file.read_text() == content + "\n"  # never overwritten


def test_secret_key_variable_of_the_wrong_length_is_refused(
    monkeypatch: pytest.MonkeyPatch, key_file: Path
) -> None:
    """A short GRANTFLOW_SECRET_KEY is refused by name, and no key file is generated instead."""
    monkeypatch.setenv("GRANTFLOW_SECRET_KEY", _key(size=31))
    with pytest.raises(ConfigurationError, match=r"^GRANTFLOW_SECRET_KEY: .*must be 32 bytes"):
        master_key(load_settings())
    assert not key_file.exists()


def test_secret_key_variable_takes_precedence_over_the_file(
    monkeypatch: pytest.MonkeyPatch, key_file: Path
) -> None:
    """GRANTFLOW_SECRET_KEY wins over an existing key file, and no file is written."""
    monkeypatch.setenv("GRANTFLOW_SECRET_KEY", _key(b"v"))
    assert master_key(load_settings()) == b"v" * 32
    assert not key_file.exists()

    key_file.parent.mkdir(parents=True)
    key_file.write_text(_key(b"f"))
    assert master_key(load_settings()) == b"v" * 32


def test_redacted_never_contains_the_key_from_the_file(key_file: Path) -> None:
    """With the key in a file, `redacted()` names the file but never shows its content."""
    settings = load_settings()
    assert "generated on first start" in settings.redacted()["secret_key"]
    master_key(settings)
    data = settings.redacted()
    assert data["secret_key"] == f"** from {key_file} (present) **"
    assert key_file.read_text().strip() not in json.dumps(data)


def test_config_show_json_redacts_the_key_and_the_database_password(tmp_path: Path) -> None:
    """`grantflow config show --json` hides a planted key and the database password."""
    planted = _key(b"\x5a")
    env = grantflow_env(
        secret_key=planted,
        database_url="postgresql://grantflow:s3cret-pw@db.internal:5432/grantflow",
    )
    result = run_grantflow("config", "show", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert planted not in result.stdout + result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    shown = json.loads(result.stdout)
    assert shown["secret_key"] == "** set **"
    assert shown["database_url"] == "postgresql+psycopg://grantflow:***@db.internal:5432/grantflow"
    assert set(shown) == set(Settings.model_fields)


def test_config_show_hides_a_database_password_given_as_a_query_parameter(tmp_path: Path) -> None:
    """`grantflow config show` (table and --json) hides `?password=` and `?sslpassword=` in
    GRANTFLOW_DATABASE_URL and keeps the other parameters readable."""
    env = grantflow_env(
        database_url="postgresql://db.internal/grantflow?user=gf&password=qu3ry-pw"
        "&sslmode=require&sslpassword=k3y-pw",
    )
    for args in (("config", "show"), ("config", "show", "--json")):
        result = run_grantflow(*args, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        output = result.stdout + result.stderr
        assert "qu3ry-pw" not in output
        assert "k3y-pw" not in output
    shown = json.loads(result.stdout)
    assert shown["database_url"] == (
        "postgresql+psycopg://db.internal/grantflow?password=***&sslmode=require"
        "&sslpassword=***&user=gf"
    )


def test_redacted_hides_the_whole_query_of_the_checkpoint_webhook(key_file: Path) -> None:
    """The audit checkpoint webhook shows scheme, host and path only: a signature carried as
    `?sig=` (a name no secret pattern knows) is hidden like `?token=`."""
    settings = load_settings(
        audit_checkpoint_url="https://siem.example:8443/hooks/audit?sig=hook-secret-55&v=1"
    )
    shown = settings.redacted()["audit_checkpoint_url"]
    assert shown == "https://siem.example:8443/hooks/audit?***"
    assert "hook-secret-55" not in json.dumps(settings.redacted())
