"""`TTS_DATABASE_URL`: whether it names PostgreSQL, and the URL with its password kept out of sight.

A password may sit in the URL's user part (`postgresql://ttsd:PASSWORD@host/db`) or in its query
(`?password=...`, libpq's keyword form); neither is ever logged, shown, or written where others may
read it. Only these functions turn the URL into text for people.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy.engine import URL, make_url

POSTGRES_SCHEMES: Final = ("postgresql", "postgres")
"""URL schemes of `TTS_DATABASE_URL` that name a PostgreSQL database (`postgresql+psycopg` too)."""
PLACEHOLDER: Final = "hidden"
"""Stands in for a password while the URL is rendered with passwords hidden."""
SECRET_KEYS: Final = frozenset({"password", "sslpassword", "passfile"})
"""libpq keywords in a URL's query that hold, or point at, a secret."""


def is_postgres_url(url: str) -> bool:
    """Whether `url` names a PostgreSQL database."""
    return "://" in url and url.partition("://")[0].partition("+")[0] in POSTGRES_SCHEMES


def check_url(url: str) -> None:
    """Raise ValueError, without repeating the URL (it may hold a password), unless SQLAlchemy and
    libpq can read it."""
    try:
        parts = make_url(url)
        _ = parts.port
    except (ValueError, TypeError) as exc:
        raise ValueError(
            "cannot be read as a URL: percent-encode `@ : / % # ?` in the user name and password (`%40` for `@`)"
        ) from exc
    if not parts.database:
        raise ValueError("names no database: end it with /DATABASE")


def scheme_of(url: str) -> str:
    """What names the kind of database (the part before `://`), or all of a short text: safe to show."""
    scheme, found, _rest = url.partition("://")
    return f"{scheme}://..." if found else "a text that is no URL"


def without_password(url: str) -> str:
    """The URL with no password at all (libpq then finds it in `~/.pgpass`), for files others may read."""
    parts = make_url(url)
    query = {key: value for key, value in parts.query.items() if key not in SECRET_KEYS}
    bare = URL.create(parts.drivername, parts.username, None, parts.host, parts.port, parts.database, query)
    return bare.render_as_string(hide_password=False)


def masked(url: str) -> str:
    """The URL as people see it: a password, if there was one, shown as `***`."""
    shown = make_url(without_password(url))
    if not has_password(url):
        return shown.render_as_string(hide_password=False)
    # Only its presence is shown: SQLAlchemy renders any password as ***.
    return shown.set(password=PLACEHOLDER).render_as_string(hide_password=True)


def has_password(url: str) -> bool:
    """Whether the URL carries a password (in its user part or its query)."""
    parts = make_url(url)
    return parts.password is not None or any(key in SECRET_KEYS for key in parts.query)
