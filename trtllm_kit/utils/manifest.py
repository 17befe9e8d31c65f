"""Typed artifacts: a JSON file beside an artifact, loaded into a class whose format version is checked.

``Manifest`` subclasses declare their file name, format string and how to redo the artifact when the
format does not match; readers consume the type, never the raw dict.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from trtllm_kit.errors import ToolkitError
from trtllm_kit.utils.fs import write_json

M = TypeVar("M", bound="Manifest")


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Record(BaseModel):
    """A plain nested record of a manifest (forbids unknown keys, so typos fail loudly)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class Manifest(Record):
    """Base of ``ExportManifest``, ``EngineManifest`` and ``BenchResults``.

    Class attributes:
        FILE: the file name inside the artifact directory.
        FORMAT: the format string written into ``format``; a file with another one is refused.
        WHAT: what the directory is, for messages ("an export directory").
        REDO: the command that makes a fresh one, for messages.
        MAKE: the command that makes one where the directory holds none (default: ``REDO``).
        READS: older format strings this class still reads (their fields are a subset).
    """

    FILE: ClassVar[str]
    FORMAT: ClassVar[str]
    WHAT: ClassVar[str]
    REDO: ClassVar[str]
    MAKE: ClassVar[str | None] = None
    READS: ClassVar[tuple[str, ...]] = ()

    format: str

    @classmethod
    def path_in(cls, directory: str | Path) -> Path:
        p = Path(directory)
        return p if p.suffix == ".json" else p / cls.FILE

    @classmethod
    def load(cls: type[M], directory: str | Path) -> M:
        """Read and check the manifest of ``directory`` (or the JSON file itself).

        Raises:
            ToolkitError: missing file, invalid JSON, another format version, or fields that do not fit
                (naming the first one), each with the command that makes a fresh artifact.
        """
        path = cls.path_in(directory)
        if not Path(directory).exists():
            raise ToolkitError(f"{directory} does not exist", cls.REDO)
        given = Path(directory)
        if given.is_file() and given.suffix != ".json" and (given.parent / cls.FILE).is_file():  # .../model.engine
            raise ToolkitError(f"{directory} is a file of {cls.WHAT}; give its directory", f"use {given.parent}")
        if not path.is_file():
            raise ToolkitError(f"{path.parent} is not {cls.WHAT} ({cls.FILE} missing)", cls.MAKE or cls.REDO)
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ToolkitError(f"{path} is not valid JSON: {e}", cls.REDO) from None
        except OSError as e:
            raise ToolkitError(f"{path} cannot be read: {e.strerror or e}") from None
        if not isinstance(data, dict):
            raise ToolkitError(f"{path} is not {cls.WHAT}'s {cls.FILE}", cls.REDO)
        got = data.get("format")
        if got != cls.FORMAT and got not in cls.READS:
            raise ToolkitError(f"{path} has format {got!r}; this trtllm-kit reads {cls.FORMAT!r}",
                               f"it was written by another version; {cls.REDO}")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise ToolkitError(f"{path}: field {where}: {err['msg']}", cls.REDO) from None

    def save(self, directory: str | Path) -> Path:
        """Write the manifest atomically (readable by everyone, like the artifact itself)."""
        path = self.path_in(directory)
        write_json(path, self.model_dump(mode="json"))
        return path
