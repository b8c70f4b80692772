"""Is the image a run ran still in its registry? The ``mpijob`` half of reproduce's code check.

The registry is asked with `python-dxf <https://pypi.org/project/python-dxf/>`_ (optional: ``pip install
'mlflow-anf[registry]'``), a maintained Docker registry v2 client: a ``HEAD`` on the manifest, answering the registry's
``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` challenge with an anonymous token request, every request
with a timeout; it needs only ``requests`` (which MLflow already installs), ``www-authenticate`` (one small module)
and ``tqdm``. Without it the check answers ``unknown`` and says what to install: reproduce then warns instead of
refusing, as it does for any registry it cannot ask.

Checked and not taken: ``oras`` (ORAS Python SDK) does the token handshake but sends its requests without a timeout
and retries failed ones up to five times with growing sleeps (minutes against an unreachable registry) and pulls in
``jsonschema``; ``docker`` (docker-py) asks a Docker daemon, not the registry; ``docker-registry-client`` and
``containerregistry`` are unmaintained (2017, 2019); ``opencontainers`` has the OCI models but no registry client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from mlflow_anf.reproduce.errors import ReproduceError, SourceGone

if TYPE_CHECKING:
    from mlflow_anf.reproduce.record import RunRecord

_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")
INSTALL_HINT = "install python-dxf (pip install 'mlflow-anf[registry]') to ask the registry"


class ImageCheck(BaseModel):
    status: Literal["present", "missing", "unknown"]
    ref: str
    digest: str | None = None
    detail: str = ""


def parse_image_ref(ref: str) -> tuple[str, str, str]:
    """``(registry, repository, tag-or-digest)`` of an image reference (Docker Hub defaults applied)."""
    name, _, digest = ref.partition("@")
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = name.rpartition(":")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = "registry-1.docker.io", name if "/" in name else f"library/{name}"
    return registry, repository, digest or tag or "latest"


def pin_image(image: str, digest: str | None) -> str:
    """*image* pinned to *digest* (``repo:tag@sha256:...``) unless it already names one."""
    if not digest or "@" in image:
        return image
    return f"{image}@{digest}"


def _anonymous_token(registry: Any, response: Any) -> None:
    """python-dxf's ``auth`` hook: answer the registry's Bearer challenge with an anonymous token (a 401 without a
    challenge is left as it is: credentials needed)."""
    if "www-authenticate" in response.headers:
        registry.authenticate(response=response)


def check_image(ref: str, timeout_s: float = 10.0) -> ImageCheck:
    """Ask the image's registry (Docker registry v2 / OCI distribution API, anonymously) whether *ref* still exists.

    ``missing`` only on a definite ``404``; no network, credentials needed, python-dxf not installed or anything else
    is ``unknown``. Never raises for what the registry or the network does.
    """
    try:
        import requests
        from dxf import DXF
        from dxf.exceptions import DXFError, DXFUnauthorizedError
    except ImportError:
        return ImageCheck(status="unknown", ref=ref, detail=INSTALL_HINT)

    registry, repository, reference = parse_image_ref(ref)
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    insecure = host in _LOCAL_HOSTS  # plain HTTP, where python-dxf (rightly) sends no credentials or tokens
    client = DXF(registry, repository, auth=None if insecure else _anonymous_token, insecure=insecure,
                 timeout=timeout_s)
    try:
        digest, _ = client.head_manifest_and_response(reference)
    except DXFUnauthorizedError:
        return ImageCheck(status="unknown", ref=ref, detail=f"{registry} answered HTTP 401 (credentials needed)")
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 404:
            return ImageCheck(status="missing", ref=ref, detail=f"{registry} answered 404 for {repository}:{reference}")
        return ImageCheck(status="unknown", ref=ref, detail=f"{registry} answered HTTP {status}")
    except (requests.RequestException, DXFError, OSError, ValueError, KeyError) as exc:
        # no network, timeouts, TLS, a challenge without a header or a token response that is not JSON
        return ImageCheck(status="unknown", ref=ref, detail=f"registry {registry} not reachable: {exc}")
    return ImageCheck(status="present", ref=ref, digest=digest, detail=f"{registry} has it")


def pin_and_check(rec: RunRecord, config: dict[str, Any], recorded: dict[str, str | None], *, check: bool,
                  checker: Callable[[str], ImageCheck], say: Callable[[str], None]
                  ) -> tuple[dict[str, Any], str, list[str]]:
    """Pin the backend config's image to the recorded digest and make sure the registry still has it.

    *recorded*: the run's image ``{"ref", "digest"}``. Returns ``(config with the pinned image, verdict, notes)``;
    raises :class:`SourceGone` when the registry answered that the image is gone.
    """
    image = str(config.get("image") or recorded["ref"] or "")
    if not image:
        raise ReproduceError(f"run {rec.run_id}: no image recorded; set image in --backend-config")
    pinned = pin_image(image, recorded["digest"])
    config = {**config, "image": pinned}
    notes = [] if "@" in pinned else [f"image {pinned} is not pinned by digest: the tag may point at other code by now"]
    if not check:
        return config, f"{pinned} (not checked)", notes
    found = checker(pinned)
    if found.status == "missing":
        raise SourceGone(f"image: {pinned} of run {rec.run_id} is gone from its registry ({found.detail})")
    if found.status == "unknown":
        say(f"could not check image {pinned}: {found.detail}")
    return config, f"{pinned} ({found.status}{', ' + found.digest if found.digest else ''})", notes
