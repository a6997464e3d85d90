"""What names of machine types and accounts, and logins, may be: one rule wherever they are made.

The config file and the management service (behind the admin API, the CLI and the UI) both check
them here. Each ends up in a database column of MAX_LENGTH characters. A login is the user part
of HTTP Basic credentials, so it never holds ':' or whitespace; an admin's login is also a path
segment of the management API (`/admins/{login}`), so it holds no '/' either. An account's name
is the part of a profile login before the '/', and follows the machine-type name rule.
"""

from __future__ import annotations

import re

MAX_LENGTH = 255

_REST = f"{{0,{MAX_LENGTH - 1}}}"
_NAME_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{_REST}")
_LOGIN_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._@+/=-]{_REST}")
_ADMIN_LOGIN_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._@+=-]{_REST}")


class InvalidName(ValueError):
    """A name or login these rules refuse; the message says what is allowed."""


def check_name(name: str) -> str:
    """A machine type's or an account's name."""
    return _checked(
        _NAME_RE, name, "use letters, digits, '.', '_' and '-', starting with one of the first two"
    )


def check_login(login: str) -> str:
    """A machine type's login: a credential's, or one in the config file."""
    return _checked(_LOGIN_RE, login, "use letters, digits and . _ @ + / = -, no ':' or whitespace")


def check_admin_login(login: str) -> str:
    return _checked(_ADMIN_LOGIN_RE, login, "use letters, digits and . _ @ + = -")


def _checked(pattern: re.Pattern[str], text: str, rule: str) -> str:
    if not pattern.fullmatch(text):
        raise InvalidName(rule)
    return text
