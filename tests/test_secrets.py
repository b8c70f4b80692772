"""The one secret detector (:mod:`mlflow_anf.secrets`): what it calls a secret, how it scrubs, and that every part
of the product that refuses or redacts secrets asks it (so DB_PASS is a secret in the backend config, in the
provenance record, in the launcher's log and in the anf provider's errors alike)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlflow_anf.secrets import REDACTED, is_secret_name, redact, redact_text, secret_in_value

CANARY = "cAnArY-9f8e7d6c5b4a3021"

SECRET_NAMES = ["DB_PASS", "DB_PASSWORD", "PGPASSWORD", "DB_PWD", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN",
                "WANDB_API_KEY", "HF_TOKEN", "MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY", "clientSecret",
                "client_secret", "accessToken", "apikey", "sas", "sig", "GITHUB_PAT", "SSH_PRIVATE_KEY", "ssh_key",
                "example.com/db-password", "example.com/api-key", "STORAGE_CONNECTION_STRING", "Authorization",
                "MYSECRET", "GOOGLE_APPLICATION_CREDENTIALS"]
PLAIN_NAMES = ["NCCL_DEBUG", "DATABASE_URL", "TOKENIZERS_PARALLELISM", "PWD", "key", "secret", "secret_env",
               "secretKeyRef", "image_pull_secrets", "credential", "MLFLOW_ANF_SECRET_ENV", "PUBLIC_KEY", "KEY_PATH",
               "keyVaultPrivateEndpointResourceId", "encryptionKeySource", "creation_token", "compass", "bypass",
               "example.com/owner", "snapshot_class", "tolerations", "MLFLOW_TRACKING_AUTH"]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_names_that_hold_no_secret(name: str) -> None:
    assert not is_secret_name(name)


SECRET_VALUES = {
    "url-password": f"postgresql://lane:{CANARY}@db.example.com:5432/lanes",
    "url-query": f"https://lane.blob.core.windows.net/data?sv=2022-11-02&sig={CANARY}",
    "url-token-user": f"https://ghp_{'a1B2' * 9}@github.com/org/repo.git",
    "bare-userinfo": f"lane:{CANARY}@registry.example.com/lanedet:1",
    "connection-string": f"DefaultEndpointsProtocol=https;AccountName=lane;AccountKey={CANARY};",
    "pair": f"--password={CANARY}",
    "json-pair": f'{{"client_secret": "{CANARY}"}}',
    "bearer": f"Authorization: Bearer {CANARY}",
    "jwt": f"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJsYW5lIn0.{CANARY}",
    "pem": f"-----BEGIN RSA PRIVATE KEY-----\n{CANARY}\n-----END RSA PRIVATE KEY-----",
    "github": "ghp_" + "Z9y8" * 9,
    "aws-key-id": "AKIAABCDEFGHIJKLMNOP",
    "huggingface": "hf_" + "abcDEF123" * 4,
}
PLAIN_VALUES = ["INFO", "http://mlflow.lane-detection.svc:5000", "lane team", "/mnt/tusimple", "true",
                "token: ${HF_TOKEN}", "password=$(DB_PASSWORD)", "registry.example.com/lanedet:0.1.0@sha256:" + "a" * 64,
                "git@github.com:org/repo.git", "me@example.com", "-x NCCL_DEBUG=INFO", "TOKENIZERS_PARALLELISM=false",
                "secret_env.HF_TOKEN.key: required", "registry.example.com/token-service:1.0",
                "secret-scanner:2024.01.15", "HF_TOKEN: looks like a credential", CANARY]


@pytest.mark.parametrize("shape", list(SECRET_VALUES))
def test_secret_values_are_found_and_scrubbed_and_never_repeated(shape: str) -> None:
    value = SECRET_VALUES[shape]
    what = secret_in_value(value)
    assert what, value
    secret = CANARY if CANARY in value else re.search(r"(ghp_|AKIA|hf_)\w+", value).group(0)
    assert secret not in what
    scrubbed = redact_text(f"it said: {value} (end)")
    assert secret not in scrubbed and REDACTED in scrubbed and scrubbed.startswith("it said: ")


@pytest.mark.parametrize("value", PLAIN_VALUES)
def test_plain_values_are_left_alone(value: str) -> None:
    assert secret_in_value(value) is None
    assert redact_text(value) == value


def test_redact_text_replaces_given_values_longest_first() -> None:
    assert redact_text(f"x {CANARY} y {CANARY[:8]} ab", [CANARY[:8], CANARY, "ab", None]) == "x *** y *** ab"


def test_redact_walks_structures_and_keeps_references() -> None:
    config = {"env": {"NOTE": f"https://lane:{CANARY}@h.example.com"}, "db_pass": CANARY, "token": ["a", "b"],
              "secret_env": {"HF_TOKEN": {"secret": "hf", "key": "token"}},
              "tolerations": [{"key": "sku", "value": "gpu"}]}
    out = redact(config)
    assert CANARY not in repr(out)
    assert out["db_pass"] == REDACTED and out["token"] == REDACTED
    assert out["env"]["NOTE"] == "https://lane:***@h.example.com"
    assert out["secret_env"] == config["secret_env"] and out["tolerations"] == config["tolerations"]


# --- one detector, asked everywhere -----------------------------------------------------------------------------
# Each of these was missed by the part's own detector before: DB_PASS, AZURE_STORAGE_KEY and a password in a URL.

def test_backend_config_refuses_what_the_detector_calls_secret() -> None:
    from mlflow_anf.backend.config import BackendConfigError, load_backend_config

    base = {"namespace": "lane", "image": "registry.example.com/lanedet:0.1.0"}
    for env, key in (({"DB_PASS": CANARY}, "env.DB_PASS"), ({"AZURE_STORAGE_KEY": CANARY}, "env.AZURE_STORAGE_KEY"),
                     ({"DATABASE_URL": SECRET_VALUES["url-password"]}, "env.DATABASE_URL")):
        with pytest.raises(BackendConfigError) as err:
            load_backend_config({**base, "env": env})
        assert err.value.problems[0].startswith(f"{key}: ") and CANARY not in str(err.value)


def test_provenance_redacts_what_the_detector_calls_secret(tmp_path: Path) -> None:
    import json

    from mlflow_anf.provenance import TAG_BACKEND_CONFIG, collect_provenance, is_secret_key

    assert is_secret_key is is_secret_name
    (tmp_path / "MLproject").write_text("name: p\n")
    record = collect_provenance(
        code_path=tmp_path, params={"db_pass": CANARY, "azure_storage_key": CANARY, "epochs": "3"},
        tags={TAG_BACKEND_CONFIG: json.dumps({"namespace": "lane", "env": {"DATABASE_URL": SECRET_VALUES["url-password"]}})},
        provider_options={"account_key": CANARY}, environ={},
    )
    text = record.model_dump_json()
    assert CANARY not in text
    assert record.params == {"db_pass": REDACTED, "azure_storage_key": REDACTED, "epochs": "3"}


def test_launcher_log_scrubs_what_the_detector_calls_secret() -> None:
    from mlflow_anf.backend.launcher import Redactor

    redactor = Redactor({"HF_TOKEN": "s3cr3t-value"}, ["HF_TOKEN"])
    line = f"connecting to {SECRET_VALUES['url-password']} with s3cr3t-value; DB_PASS={CANARY}\n"
    assert redactor(line) == "connecting to postgresql://lane:***@db.example.com:5432/lanes with ***; DB_PASS=***\n"


def test_anf_errors_scrub_what_the_detector_calls_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow_anf.snapshots.anf import redact as anf_redact

    monkeypatch.setenv("AZURE_CLIENT_SECRET", "env-secret-value")
    text = anf_redact(f"proxy: Bearer {CANARY}; env-secret-value; SharedAccessSignature={CANARY}; "
                      f"{SECRET_VALUES['url-query']}")
    assert CANARY not in text and "env-secret-value" not in text


def test_no_module_keeps_a_detector_of_its_own() -> None:
    """Regression guard: secret-word patterns live in mlflow_anf/secrets.py only."""
    root = Path(__file__).resolve().parents[1] / "mlflow_anf"
    pattern = re.compile(r"PASSWORD\|PASSWD|SECRET\|TOKEN|client_secret\|", re.I)
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name != "secrets.py" and pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
