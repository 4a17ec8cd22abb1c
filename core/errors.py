"""Errors users see. Each names what is at fault so a CLI message or a 422 can point at it."""

from __future__ import annotations


class MuscleError(Exception):
    """Base class for errors the engine reports to users (CLI exit code 2, API 422)."""

    code = "invalid_request"

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": str(self)}


class ConfigError(MuscleError):
    code = "invalid_config"


class DataError(MuscleError):
    """A bad input file: `file`, 1-based `line` (None for whole-file problems) and `field`."""

    code = "invalid_file"

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 field: str | None = None, role: str | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        self.role = role  # train | aux | eval | select | probe:NAME
        where = []
        if file:
            where.append(file)
        if line is not None:
            where.append(f"line {line}")
        if field:
            where.append(f"field {field!r}")
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": str(self), "file": self.file, "line": self.line,
                "field": self.field, "param": self.role}


class JobCancelled(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside the engine when the cancel check returns True (checked every training step)."""
