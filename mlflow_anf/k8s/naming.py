"""Kubernetes naming rules, in one place: DNS-1123/1035 names, label keys and values, and derived names.

Every module that checks or makes a Kubernetes name uses these (the backend config, the MPIJob renderer, the csi
snapshot provider). The rules are those of ``k8s.io/apimachinery/pkg/util/validation/validation.go``
(``IsDNS1123Label``, ``IsDNS1123Subdomain``, ``IsDNS1035Label``, ``IsQualifiedName``, ``IsValidLabelValue``).

Derived names (a prefix plus a suffix such as a run id) that would be too long keep their head and end with a short
hash of the whole, so two long names stay distinct and the same input always gives the same name.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
LABEL_VALUE_MAX = 63
HASH_LEN = 8

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


# ---- predicates ---------------------------------------------------------------------------------------------------


def is_dns1123_label(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= DNS1123_LABEL_MAX and _DNS1123_LABEL.match(value) is not None


def is_dns1123_subdomain(value: Any) -> bool:
    return (isinstance(value, str) and 0 < len(value) <= DNS1123_SUBDOMAIN_MAX
            and _DNS1123_SUBDOMAIN.match(value) is not None)


def is_dns1035_label(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= DNS1123_LABEL_MAX and _DNS1035_LABEL.match(value) is not None


def is_label_key(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    ok = bool(name) and len(name) <= 63 and _LABEL_NAME.match(name) is not None
    if prefix:
        ok = ok and is_dns1123_subdomain(prefix)
    return ok


def is_valid_label_value(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= LABEL_VALUE_MAX and _LABEL_VALUE.match(value) is not None


# ---- validators (raise ValueError naming the field) ---------------------------------------------------------------


def validate_dns1123_label(value: str, field: str) -> str:
    """Return *value* if it is an RFC 1123 label (namespaces), else raise ``ValueError`` naming *field*."""
    if not is_dns1123_label(value):
        raise ValueError(
            f"{field}: {value!r} is not a valid DNS-1123 label (lower-case letters, digits and '-', starting and "
            "ending with a letter or digit, at most 63 characters)"
        )
    return value


def validate_dns1123_subdomain(value: str, field: str) -> str:
    """Return *value* if it is an RFC 1123 subdomain (most object names), else raise ``ValueError``."""
    if not is_dns1123_subdomain(value):
        raise ValueError(
            f"{field}: {value!r} is not a valid DNS-1123 subdomain (lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit, at most 253 characters)"
        )
    return value


def validate_label_key(key: str, field: str = "labels") -> str:
    """Return *key* if it is a valid label key (``[prefix/]name``), else raise ``ValueError``."""
    if not is_label_key(key):
        raise ValueError(
            f"{field}: {key!r} is not a valid label key ([DNS-subdomain prefix/]name, name at most 63 characters "
            "of letters, digits, '-', '_' and '.', starting and ending with a letter or digit)"
        )
    return key


# ---- making names ---------------------------------------------------------------------------------------------------


def short_hash(text: str, length: int = HASH_LEN) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def fit(text: str, max_len: int, *, whole: str | None = None, trim: str = "-.") -> str:
    """*text* if it fits in *max_len*, else its head and ``-<hash of whole>`` (default: of *text*) in *max_len*."""
    if len(text) <= max_len:
        return text
    digest = short_hash(whole if whole is not None else text)
    head = text[: max(max_len - len(digest) - 1, 0)].rstrip(trim)
    return f"{head}-{digest}" if head else digest[:max_len]


def sanitize_label_value(value: Any) -> str:
    """Turn any value into a valid label value: invalid characters become ``-``, ends trimmed, at most 63
    characters (a too-long value keeps its head and gets a short hash of the whole, so it stays distinct)."""
    text = str(value)
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")
    if len(cleaned) > LABEL_VALUE_MAX:
        cleaned = fit(cleaned, LABEL_VALUE_MAX, whole=text, trim="-_.")
    return cleaned


def dns1035_prefix(text: str) -> str:
    """*text* lower-cased with runs of other characters as one ``-``; ``p-`` in front when it does not start with a
    letter; ``""`` when nothing is left. Not length-limited (see :func:`derive_name`)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    return name if not name or name[0].isalpha() else f"p-{name}"


def run_suffix(run_id: str, length: int = 8) -> str:
    """The first *length* lower-case alphanumerics of an MLflow run id (``run`` when there are none)."""
    return re.sub(r"[^a-z0-9]", "", str(run_id).lower())[:length] or "run"


def derive_name(prefix: str, suffix: str, *, max_len: int = DNS1123_SUBDOMAIN_MAX, reserve: int = 0,
                dns1035: bool = False) -> str:
    """``<prefix>-<suffix>`` as a valid name of at most ``max_len - reserve`` characters.

    The suffix (e.g. a run id) is always kept whole; a prefix that does not fit is cut and ends with a hash of the
    whole prefix, so different long prefixes stay different. ``reserve`` leaves room for what a controller appends
    (an MPIJob's ``-worker-<n>``). ``dns1035``: the name must start with a letter (Service/Pod host names)."""
    room = max_len - reserve - len(suffix) - 1
    if room < 1:
        raise ValueError(f"name suffix {suffix!r} leaves no room for a prefix in {max_len - reserve} characters")
    head = dns1035_prefix(prefix) if dns1035 else prefix
    head = fit(head, room) if len(head) > room else head
    head = head.rstrip("-.") or ("m" if dns1035 else "x")
    if dns1035 and not head[0].isalpha():
        head = f"m-{head}"[:room].rstrip("-.")
    return f"{head}-{suffix}"
