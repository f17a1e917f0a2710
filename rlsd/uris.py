"""URIs shown without their secrets: the one helper for anything printed, logged, tagged or
written as an artifact.

:func:`mask_uri` takes any URI the product handles -- a SQLAlchemy URL of a source or of
MLflow's backend store, an MLflow tracking / registry URI (``http(s)://user:pass@host``,
``databricks``, a file path, ``sqlite:///``), a Prefect API URL -- and returns it with the
password (and credential-like query parameters) replaced by ``***``. What it returns is for
people; never connect with it.

A password that is entirely a ``${ENV_VAR}`` reference is kept as written: it names where the
secret lives, which is what a reader of a manifest or a lineage report needs, and it is not a
secret. Text that carries nothing to hide comes back unchanged, byte for byte, so a source's
``${VAR}`` template reads the same in a manifest as in its sources file.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

MASK = "***"

_WHOLE_ENV_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
# Query parameters whose value is a credential: ?password=, ?sslpassword=, ?pwd=, ?token=,
# ?access_token=, ?api_key=, ?X-Amz-Signature=, ?client_secret= ...
_SECRET_PARAM = re.compile(
    r"pass(?:word|wd)|pwd|secret|token|api[_-]?key|access[_-]?key|signature", re.IGNORECASE
)
# One key=value pair of a query string.
_QUERY_PAIR = re.compile(r"(?P<lead>^|[&;])(?P<key>[^=&;]*)=(?P<value>[^&;]*)")
# A password inside a parameter's value, raw or percent-encoded (an ODBC connection string in
# ?odbc_connect=...;PWD=secret;...).
_EMBEDDED_PASSWORD = re.compile(
    r"(?:^|(?<=[;&=\s{])|(?<=%3B))(?P<key>pwd|password|passwd)(?P<eq>\s*(?:=|%3D)\s*)"
    r"(?P<value>(?:(?!%3B|;|&).)*)",
    re.IGNORECASE,
)
# Dialects (the part of the scheme before "+driver") that SQLAlchemy renders itself; every
# other scheme (http, https, databricks, s3, file...) is masked as text, so that a path or a
# fragment comes back exactly as given.
_SQL_DIALECTS = frozenset(
    {
        "postgresql", "postgres", "mysql", "mariadb", "sqlite", "mssql", "oracle",
        "cockroachdb", "redshift", "snowflake", "duckdb", "trino", "clickhouse", "bigquery",
    }
)  # fmt: skip


def is_env_ref(text: str | None) -> bool:
    """Whether ``text`` is exactly one ``${ENV_VAR}`` reference (no literal text around it)."""
    return text is not None and bool(_WHOLE_ENV_REF.match(text))


def is_secret_param(name: str) -> bool:
    """Whether a query parameter named ``name`` carries a credential."""
    return bool(_SECRET_PARAM.search(name))


def embedded_password(value: str) -> bool:
    """Whether a parameter's value holds a literal ``PWD=`` / ``password=`` pair (an ODBC
    connection string); a ``${ENV_VAR}`` reference there is not literal."""
    return any(not is_env_ref(m["value"].strip()) for m in _EMBEDDED_PASSWORD.finditer(value))


def mask_uri(uri: str) -> str:
    """``uri`` with its password and credential-like query values replaced by ``***``.

    Never raises. SQLAlchemy URLs are rendered by SQLAlchemy (``hide_password=True``); any
    other scheme, and a SQLAlchemy URL that does not parse cleanly, is masked as text: whatever
    lies between ``://`` and the last ``@`` (the username kept when a ``:`` follows it; a bare
    userinfo may be a token and is masked whole), since a password holding ``@ / : # ?``
    unescaped breaks every parser and its tail must not survive as "the host".
    """
    if not isinstance(uri, str):
        uri = str(uri)
    scheme, sep, _ = uri.partition("://")
    if not sep:
        return uri  # a path, "databricks", "databricks-uc", "mlflow-artifacts:/...": no userinfo
    if scheme.split("+", 1)[0].lower() in _SQL_DIALECTS:
        masked = _mask_sqlalchemy(uri)
        if masked is not None:
            return masked
    return _mask_text(uri)


def mask_uri_in(text: str, uri: str) -> str:
    """``text`` (another library's message, a link) with every occurrence of ``uri`` masked:
    a message that quotes the URI verbatim cannot be masked by parsing it as one."""
    masked = mask_uri(uri)
    if not uri or masked == uri:
        return text
    # an http(s) URI is often quoted without its trailing '/' (base + "/api/2.0/...")
    return text.replace(uri, masked).replace(uri.rstrip("/"), masked.rstrip("/"))


def _mask_sqlalchemy(uri: str) -> str | None:
    """SQLAlchemy's own rendering with the password hidden; None when SQLAlchemy cannot be
    trusted to have found the password (no parse, or an '@' past the user part)."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(uri)
    except Exception:  # noqa: BLE001 - ArgumentError, or ValueError from a non-numeric port
        return None
    # "user:p@ss@host" parses as password "p" and host "ss@host": the rest of the password
    # would be shown as the host, so only text masking up to the last '@' is safe
    if "@" in (url.host or "") or (url.host is not None and "@" in (url.database or "")):
        return None
    # a reference counts only as written (":${VAR}@"): "%24%7BVAR%7D" is percent-escaped text
    hide_password = bool(url.password) and not (
        is_env_ref(url.password) and f":{url.password}@" in uri
    )
    secret_query = any(
        (is_secret_param(k) and not is_env_ref(v)) or embedded_password(v)
        for k, values in url.query.items()
        for v in ((values,) if isinstance(values, str) else values)
    )
    if not hide_password and not secret_query:
        return uri
    # re-rendered only to hide the password; a secret query value alone is masked in the text
    # as written (a ${VAR} password would come back percent-encoded otherwise)
    rendered = url.render_as_string(hide_password=True) if hide_password else uri
    base, q, query = rendered.partition("?")
    return base + q + _mask_query(query) if q else rendered


def _mask_text(uri: str) -> str:
    scheme, _, rest = uri.partition("://")
    at = rest.rfind("@")
    if at >= 0:
        userinfo, after = rest[:at], rest[at + 1 :]
        user, colon, password = userinfo.partition(":")
        if any(c in user for c in "/?#"):
            # the '@' is past the authority: in a path or query ("?mail=a@b", left as it is),
            # or after a password that holds '/', '?' or '#' (the span is hidden whole)
            userinfo = MASK if colon else userinfo
        elif colon:
            if password and not is_env_ref(password):
                userinfo = f"{user}:{MASK}"
        else:
            userinfo = MASK  # a bare userinfo is a token as often as a name (https://TOKEN@host)
        head = f"{scheme}://{userinfo}@"
    else:
        head, after = f"{scheme}://", rest
    path, q, query = after.partition("?")
    if not q:
        return head + after
    query, hash_, fragment = query.partition("#")
    return head + path + q + _mask_query(query) + hash_ + fragment


def _mask_query(query: str) -> str:
    def pair(m: re.Match[str]) -> str:
        key, value = unquote_plus(m["key"]), unquote_plus(m["value"])
        if is_secret_param(key) and value and not is_env_ref(value):
            return f"{m['lead']}{m['key']}={MASK}"
        return m.group(0)

    def embedded(m: re.Match[str]) -> str:
        if is_env_ref(unquote_plus(m["value"]).strip()):
            return m.group(0)
        return f"{m['key']}{m['eq']}{MASK}"

    return _EMBEDDED_PASSWORD.sub(embedded, _QUERY_PAIR.sub(pair, query))
