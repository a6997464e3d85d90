"""YAML documents checked by pydantic models: the config file and index specs.

Both refuse keys they do not know and report every error on a line of its own that names the
key, so a typo in either reads the same.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from metahub.features.model import Feature


class StrictModel(BaseModel):
    """Unknown keys are errors (a misspelt key must not be silently ignored); values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def each(check: Callable[[str], object]) -> AfterValidator:
    """Validates every string of a list with `check`, which raises ValueError for a bad one."""

    def checked(texts: tuple[str, ...]) -> tuple[str, ...]:
        for text in texts:
            check(text)
        return texts

    return AfterValidator(checked)


FeatureTexts = Annotated[tuple[str, ...], each(Feature.parse)]
"""`key:value` strings, kept as written once each has parsed."""


def read_yaml(path: Path, kind: str, error: type[ValueError]) -> Any:
    """The document in `path`; `error` says, naming the file as `kind`, why it cannot be read."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise error(f"cannot read {kind} {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise error(f"{kind} {path} is not valid YAML: {exc}") from exc


def describe(exc: ValidationError, source: str) -> str:
    """One line per error, each naming its key (`manifests.1.platform.features.0: ...`)."""
    lines = [f"invalid {source}:"]
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)
