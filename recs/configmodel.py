"""The base of every config: pydantic, `extra="forbid"` (a typo is an error, not a silent default), loadable from TOML."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from recs.errors import ConfigError

OnBadRows = Literal["error", "skip"]
UnknownUserPolicy = Literal["raise", "warn", "fallback"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_toml(cls, path: str | Path, section: str | None = None) -> Self:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"{path}: cannot read TOML: {err}") from None
        if section is not None:
            data = data.get(section, {})
        return cls.parse_dict(data, source=str(path))

    @classmethod
    def parse_dict(cls, data: dict, source: str = "config") -> Self:
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(root)"
            raise ConfigError(f"{source}: {where}: {first['msg']}") from None
