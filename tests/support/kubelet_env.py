"""A container's environment as the kubelet builds it: ``env`` entries in order, each ``value`` with its ``$(VAR)``
references expanded from the entries before it.

Modelled on kubernetes/kubernetes: ``makeEnvironmentVariables`` (pkg/kubelet/kubelet_pods.go) expands each
``value`` with ``expansion.Expand(envVar.Value, mappingFunc)`` over the variables defined so far, and the expansion
rules are third_party/forked/golang/expansion/expand.go: ``$(NAME)`` becomes the value of a variable defined
before, ``$$`` is a literal ``$``, and a reference to an undefined variable is left as it is written. Values that
come from elsewhere (``valueFrom``: a Secret, a field) are what the test says they are (*given*).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, defined: Mapping[str, str]) -> str:
    """*value* with ``$(VAR)`` references to *defined* expanded and ``$$`` made ``$``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return defined.get(m.group(1), m.group(0))

    return _REF.sub(sub, value)


def container_env(container: Mapping[str, Any], given: Mapping[str, str]) -> dict[str, str]:
    """The environment of *container* (a manifest's container dict). An entry with ``valueFrom`` takes its value
    from *given* (a missing one fails naming it); *given* also overrides a literal value, as a test must where the
    manifest names a cluster-only host."""
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        name = entry["name"]
        if name in given:
            env[name] = given[name]
        elif "valueFrom" in entry:
            raise KeyError(f"env {name}: comes from {entry['valueFrom']}; the test must give its value")
        else:
            env[name] = expand(entry.get("value", ""), env)
    return env
