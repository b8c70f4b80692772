"""The run tags, artifact paths and limits reproduce reads and writes (aliases of :mod:`mlflow_anf.vocabulary`
names, plus MLflow's own tags).
"""

from __future__ import annotations

import re

from mlflow_anf.vocabulary import (
    ARTIFACT_BACKEND_CONFIG,
    ARTIFACT_MPIJOB,
    TAG_REPRODUCE_CODE,
    TAG_REPRODUCE_IDENTICAL,
    TAG_REPRODUCE_IMAGE,
    TAG_REPRODUCE_OVERRIDES,
    TAG_REPRODUCE_RESTORED,
    TAG_REPRODUCE_REWRITTEN,
    TAG_VALUE_MAX,
)

TAG_OVERRIDES = TAG_REPRODUCE_OVERRIDES
TAG_REWRITTEN = TAG_REPRODUCE_REWRITTEN
TAG_RESTORED = TAG_REPRODUCE_RESTORED
TAG_CODE_CHECK = TAG_REPRODUCE_CODE
TAG_IMAGE_CHECK = TAG_REPRODUCE_IMAGE
TAG_IDENTICAL = TAG_REPRODUCE_IDENTICAL
TAG_LEGACY_ENTRY_POINT = "lanedet.entry_point"
TAG_SOURCE_TYPE = "mlflow.source.type"
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_MAX = TAG_VALUE_MAX
MPIJOB_ARTIFACT = ARTIFACT_MPIJOB
BACKEND_CONFIG_ARTIFACT = ARTIFACT_BACKEND_CONFIG

SUPPORTED_BACKENDS = ("local", "mpijob")
PARAM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
