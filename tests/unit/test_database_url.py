"""`TTS_DATABASE_URL`: which URLs name PostgreSQL, and a password never shown, wherever it sits."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttsd.config import load_settings
from ttsd.database_url import has_password, is_postgres_url, masked, without_password
from ttsd.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "postgres"),
    [
        ("postgresql://ttsd@db/ttsd", True),
        ("postgres://ttsd@db/ttsd", True),
        ("postgresql+psycopg://ttsd@db/ttsd", True),
        ("mysql://ttsd@db/ttsd", False),
        ("/var/lib/ttsd.sqlite3", False),
        ("postgresql", False),
    ],
)
def test_which_urls_name_postgresql(url: str, postgres: bool) -> None:
    assert is_postgres_url(url) is postgres


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://ttsd:s3cret@db:5432/ttsd",
        "postgresql://ttsd@db/ttsd?password=s3cret",
        "postgresql://ttsd@db/ttsd?sslmode=require&sslpassword=s3cret",
        "postgresql://ttsd:s3cret@/ttsd?host=/tmp/sock&port=5432",
    ],
)
def test_a_password_is_never_shown_nor_kept_for_others(url: str) -> None:
    assert has_password(url)
    assert "s3cret" not in masked(url) and "***" in masked(url)
    bare = without_password(url)
    assert "s3cret" not in bare and not has_password(bare)


def test_what_is_not_secret_is_kept() -> None:
    url = "postgresql://ttsd:pw@db.local:6432/queue?sslmode=require&host=/tmp/sock"
    assert without_password(url) == "postgresql://ttsd@db.local:6432/queue?host=%2Ftmp%2Fsock&sslmode=require"
    assert not has_password("postgresql://ttsd@db/ttsd")
    assert masked("postgresql://ttsd@db/ttsd") == "postgresql://ttsd@db/ttsd"


def test_a_wrong_url_is_refused_without_repeating_it(tmp_path: Path) -> None:
    environ = {"TTS_DATABASE_URL": "postgress://ttsd:s3cret@db/ttsd", "TTS_STATE_DIR": str(tmp_path)}
    with pytest.raises(ConfigError) as refused:
        load_settings(environ=environ)
    assert "TTS_DATABASE_URL" in str(refused.value) and "postgress://..." in str(refused.value)
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://studio:S3cr@t:/p%w#d?x@127.0.0.1:5432/q1", "percent-encode"),
        ("postgresql://ttsd@db.local", "names no database"),
    ],
)
def test_an_unreadable_url_is_a_settings_error(tmp_path: Path, url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as refused:
        load_settings(environ={"TTS_DATABASE_URL": url, "TTS_STATE_DIR": str(tmp_path)})
    assert "S3cr" not in str(refused.value)
