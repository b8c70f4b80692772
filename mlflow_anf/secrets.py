"""The one secret detector of mlflow-anf: what looks like a credential, and how it is scrubbed.

Every place that refuses or redacts a secret asks this module (the backend config, the entry-point parameters the
``mpijob`` backend submits, the provenance record, the launcher's log tee, the ``anf`` provider's error texts), so a
name or a value is a secret everywhere or nowhere. Pure: no I/O, no environment reads, nothing at import.

* :func:`is_secret_name` - a *name* under which a credential is kept: ``DB_PASSWORD``, ``DB_PASS``, ``HF_TOKEN``,
  ``AZURE_STORAGE_KEY``, ``clientSecret``, ``sas``, ``example.com/api-token`` ... Names of references to secrets
  (``secret``, ``secretName``, ``image_pull_secrets``, a Secret's ``key``) are not.
* :func:`secret_in_value` - why a *value* holds a credential whatever its name: a password or a known token in a
  URL's user info (also ``user:password@host`` without a scheme), a secret-named query parameter (``?sig=``, ``?token=``), a ``Password=``/``token:`` pair, a
  bearer/basic authorization, a JWT, a PEM private key, a well-known token format (GitHub, GitLab, Slack, AWS,
  Databricks, Hugging Face, OpenAI, Google). The reason never repeats the value.
* :func:`redact_text` - *text* with all of the above (and any literal *values* given) replaced by ``***``.
* :func:`redact` - a copy of a JSON-like structure with the values of secret-named keys replaced and every string
  scrubbed with :func:`redact_text`.
* :func:`url_without_userinfo` - a URL with its ``user:password@`` removed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

REDACTED = "***"

# Keys that name a reference to a secret, a credential *type*, or a schema field, never a secret value: the names
# of Kubernetes Secrets and their keys (``secret_env: {X: {secret, key}}``, a resubmitted job needs them), the anf
# provider's ``credential`` option (default, environment, ...), a toleration's ``key``, an ANF volume's creation
# token (its export path).
NOT_SECRET_NAMES = frozenset({
    "secret", "secret_env", "secretKeyRef", "secretRef", "image_pull_secrets", "imagePullSecrets", "secretName",
    "credential", "key", "creation_token", "creationToken", "PWD", "OLDPWD", "MLFLOW_ANF_SECRET_ENV",
})

# Words (after splitting on separators and camelCase) that make a name secret wherever they appear, also run
# together ("MYPASSWORD"); TOKEN but not TOKENIZER.
_SECRET_RUN = re.compile(
    r"PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN(?!IZ)|CREDENTIAL|APIKEY|ACCESSKEY|PRIVATEKEY|CONNECTIONSTRING|CONNSTR"
    r"|AUTHORIZATION|COOKIE|SIGNATURE"
)
# Short words that are secret only as a whole word (DB_PASS, DB_PWD, AZURE_SAS, GITHUB_PAT, ?sig=).
_SECRET_WORDS = frozenset({"PASS", "PWD", "SAS", "PAT", "SIG"})
# "<something>_KEY" is a key (AZURE_STORAGE_KEY, WANDB_API_KEY, SSH_KEY) unless it is a public one.
_NOT_SECRET_KEY_QUALIFIERS = frozenset({"PUBLIC", "PUB", "SORT", "PARTITION", "PRIMARY", "FOREIGN", "CACHE"})


def _words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [w.upper() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]


def is_secret_name(name: str) -> bool:
    """Whether a value stored under *name* (env var, mapping key, annotation key, query or form field) may be a
    credential."""
    name = str(name)
    if name in NOT_SECRET_NAMES:
        return False
    words = _words(name.rsplit("/", 1)[-1])  # an annotation/label key: its name, not its DNS prefix
    if not words:
        return False
    if _SECRET_RUN.search("".join(words)) or any(w in _SECRET_WORDS for w in words):
        return True
    last = words[-1]
    return last in ("KEY", "KEYS") and len(words) > 1 and words[-2] not in _NOT_SECRET_KEY_QUALIFIERS


# Well-known credential formats, found anywhere in a text.
_TOKEN_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a PEM private key", re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z0-9 ]*PRIVATE "
                                     r"KEY-----|$)")),
    ("an authorization header", re.compile(r"(?i)\b(?:bearer|basic)\s+[A-Za-z0-9\-._~+/]{8,}=*")),
    ("a JSON web token", re.compile(r"\beyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*")),
    ("a GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})")),
    ("a GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a Databricks token", re.compile(r"\bdapi[0-9a-f]{32}\b")),
    ("a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")),
    ("an OpenAI key", re.compile(r"\bsk-[A-Za-z0-9_-]{20,}\b")),
    ("a Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
)
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")
# user:password@host without a scheme (a registry login pasted into an image reference, a DSN); not repo:tag@sha256:
_BARE_USERINFO = re.compile(r"(?<![\w/:.@-])(?P<user>[A-Za-z][A-Za-z0-9._-]*):(?P<password>[^\s@/:'\"]+)@(?!sha256:)"
                            r"(?=[A-Za-z0-9-]+[.:/A-Za-z0-9-])")
# name<sep>value pairs: password=x, "client_secret": "x", Password=x; (connection strings); --token x is not one.
# The value is a look-ahead, so that a pair inside another pair's value ("ns: 'password=x'") is found too.
# A ':' separates a pair only after a quoted key ("token": "x"): "HF_TOKEN: looks like a credential" is prose and
# "registry.example.com/token-service:1.0" an image.
_PAIR = re.compile(r"(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)"
                   r"(?P<sep>[\"']?\s*=\s*[\"']?|[\"']\s*:\s*[\"']?)"
                   r"(?=(?P<value>[^\s\"'&;,{}\[\]]+))")
# values that only refer to a secret held elsewhere: $(VAR), ${VAR}, $VAR, booleans, ***
_QUOTES = " \t\"'"
_REFERENCE = re.compile(r"^(\$\(?\{?[A-Za-z_][A-Za-z0-9_]*\}?\)?|\*+|true|false|none|null|)$", re.I)


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        password, username = parts.password, parts.username
    except ValueError:
        return None
    if password and not _REFERENCE.match(password):
        return "a password in the URL's user info"
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if is_secret_name(name) and not _REFERENCE.match(value):
            return f"a credential in the URL's query parameter '{name}'"
    if username and any(p.search(username) for _, p in _TOKEN_PATTERNS):
        return "a token in the URL's user info"
    return None


def secret_in_value(value: str) -> str | None:
    """Why *value* holds a credential (``None`` when it does not look like it holds one). Never repeats it."""
    text = str(value)
    for what, pattern in _TOKEN_PATTERNS:
        if pattern.search(text):
            return what
    for match in _URL.finditer(text):
        problem = _url_problem(match.group(0))
        if problem:
            return problem
    for match in _BARE_USERINFO.finditer(_URL.sub(" ", text)):
        if not _REFERENCE.match(match.group("password")):
            return "a password before '@' (user:password@host)"
    for match in _secret_pairs(_URL.sub(" ", text)):
        sep = match.group("sep").strip(_QUOTES)
        return f"a '{match.group('key')}{sep}' credential"
    return None


def _scrub_url(match: re.Match[str]) -> str:
    url = match.group(0)
    try:
        parts = urlsplit(url)
        password, username = parts.password, parts.username
    except ValueError:
        return url
    netloc = parts.netloc
    if password:
        netloc = f"{username or ''}:{REDACTED}@{netloc.rpartition('@')[2]}"
    elif username and any(p.search(username) for _, p in _TOKEN_PATTERNS):
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        query = re.sub(r"(?P<name>[^&=]+)=(?P<value>[^&]*)",
                       lambda m: f"{m.group('name')}={REDACTED}" if is_secret_name(m.group("name")) else m.group(0),
                       query)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secret_pairs(text: str) -> Iterable[re.Match[str]]:
    for match in _PAIR.finditer(text):
        if is_secret_name(match.group("key")) and not _REFERENCE.match(match.group("value")):
            yield match


def _scrub_pairs(text: str) -> str:
    out, pos = [], 0
    for match in _secret_pairs(text):
        start, end = match.start("value"), match.end("value")
        if start < pos:  # inside a value already scrubbed
            continue
        out += [text[pos:start], REDACTED]
        pos = end
    return "".join(out) + text[pos:]


def redact_text(text: str, values: Iterable[str | None] = ()) -> str:
    """*text* with credentials replaced by ``***``: the literal *values* (those of 4 characters or more, e.g. the
    values of secret environment variables), then everything :func:`secret_in_value` finds."""
    for value in sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    text = _URL.sub(_scrub_url, text)
    text = _BARE_USERINFO.sub(lambda m: f"{m.group('user')}:{REDACTED}@", text)
    for what, pattern in _TOKEN_PATTERNS:
        if what == "an authorization header":
            text = pattern.sub(lambda m: m.group(0).split()[0] + " " + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return _scrub_pairs(text)


def redact(value: Any) -> Any:
    """A copy of *value* (JSON-like) with the values of secret-named keys replaced by ``***`` and every string
    scrubbed with :func:`redact_text`. A mapping under a secret-named key (``secret_env: {X: {secret, key}}``, a
    reference) is kept and walked."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if is_secret_name(str(k)) and not isinstance(v, Mapping):
                out[str(k)] = REDACTED
            else:
                out[str(k)] = redact(v)
        return out
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def url_without_userinfo(url: str) -> str:
    """*url* without its ``user[:password]@`` (unchanged when it has none or does not parse)."""
    try:
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return url
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


__all__ = [
    "NOT_SECRET_NAMES", "REDACTED", "is_secret_name", "redact", "redact_text", "secret_in_value",
    "url_without_userinfo",
]
