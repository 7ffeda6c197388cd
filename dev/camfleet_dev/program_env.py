"""A program's environment from its own settings model, for the processes the dev kit starts.

`camfleet up`, the test bed and the benchmarks start the operator and the gateway as processes
configured only by environment variables, as their pods are. Building that environment from the
program's `Settings` model validates it here, before anything starts, and a renamed or mistyped
setting fails at once instead of being ignored by the program.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, TypeVar

from pydantic import SecretStr
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


def program_settings(settings_type: type[S], values: Mapping[str, Any]) -> S:
    """`values` validated by the program's model, without reading this process's environment.

    The programs ignore unknown environment variables (a pod may carry others); here an unknown
    name is a mistake in the dev kit and is refused."""
    unknown = sorted(set(values) - set(settings_type.model_fields))
    if unknown:
        raise ValueError(f"{settings_type.__module__}.{settings_type.__name__} has no {unknown}")
    return settings_type.model_validate(dict(values))


def program_env(settings: BaseSettings) -> dict[str, str]:
    """The environment variables that give the program exactly the settings set in `settings`
    (defaults stay the program's own)."""
    prefix = str(settings.model_config.get("env_prefix") or "")
    env: dict[str, str] = {}
    for name in sorted(settings.model_fields_set):
        value = getattr(settings, name)
        if value is not None:
            env[f"{prefix}{name}".upper()] = _text(value)
    return env


def _text(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(_text(v) for v in value)
    return str(value)
