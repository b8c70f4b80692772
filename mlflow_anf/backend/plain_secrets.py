"""Plain secrets in a backend config: the scan that refuses a credential given as a plain value anywhere in it.

Secrets reach the pods only through ``secret_env`` (Kubernetes Secret references); :func:`plain_secrets` finds what
looks like one elsewhere, using the one detector of :mod:`mlflow_anf.secrets`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from mlflow_anf.secrets import is_secret_name, secret_in_value


def _use_secret_env(name: str) -> str:
    return (f"keep its value in a Kubernetes Secret and reference it with "
            f"secret_env: {{\"{name}\": {{\"secret\": \"<secret>\", \"key\": \"<key>\"}}}}")



# Values that name a credential *type* or a flag, not a credential, under a secret-looking key (an annotation such
# as ``vault.hashicorp.com/agent-inject-token: "true"``).
_FLAG_VALUES = frozenset({"", "true", "false", "yes", "no", "0", "1"})


def plain_secrets(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, what)`` for every secret-looking plain value in a backend config's *data* (``model_dump`` form):
    every string is checked with :func:`~mlflow_anf.secrets.secret_in_value`; the keys of ``annotations``,
    ``labels`` and ``node_selector`` with :func:`~mlflow_anf.secrets.is_secret_name`; ``tracking_uri`` may carry no
    user info at all. ``secret_env`` holds references only and is skipped."""
    problems: list[tuple[str, str]] = []
    hint = "put the value in a Kubernetes Secret and pass it to the pods with secret_env"

    def walk(value: Any, key: str) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")
        elif isinstance(value, str):
            what = secret_in_value(value)
            if what:
                name = key.split(".", 1)[1] if key.startswith("env.") else "<NAME>"
                problems.append((key, f"holds {what}; {_use_secret_env(name) if key.startswith('env.') else hint}"))

    for field, value in data.items():
        if field == "secret_env":
            continue
        if field in ("annotations", "labels", "node_selector") and isinstance(value, Mapping):
            for k, v in value.items():
                if is_secret_name(str(k)) and str(v).strip().lower() not in _FLAG_VALUES:
                    problems.append((f"{field}.{k}", f"looks like a credential (a secret-named key); {hint}"))
                else:
                    walk(v, f"{field}.{k}")
        elif field == "tracking_uri" and isinstance(value, str):
            parts = urlsplit(value)  # the field validator made sure it parses
            userinfo = parts.username is not None or parts.password is not None
            if parts.password is not None:
                problems.append((field, "must not embed a password; put MLFLOW_TRACKING_USERNAME/"
                                        "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in a Secret and "
                                        "reference them with secret_env"))
            elif userinfo:
                problems.append((field, "must not embed user info (a user name or token before '@'); put "
                                        "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_TOKEN in a Secret and reference "
                                        "them with secret_env"))
            else:
                walk(value, field)
        else:
            walk(value, field)
    return problems
