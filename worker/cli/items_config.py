"""What ``clicktune index --items-config`` reads: the loader and the items of a first index."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field, model_validator

from worker.indexing import ItemRef


class ItemsConfig(BaseModel):
    """JSON text or a JSON file.

    ``loader`` is a loader config (``loaders.create_loader``); the items come from exactly one of
    ``items`` (inline), ``items_file`` (JSON lines ``{"object_id", "meta"}``) or
    ``scan_directory: true`` (every file under a ``local_file`` loader's ``root_dir``:
    ``object_id`` = file name without extension, ``meta = {"path": <relative path>}``). The scanned
    directory is confined like the loader's: it must be inside ``CLICKTUNE_LOADER_ALLOWED_ROOTS``
    (:meth:`loaders.settings.LoaderSettings.check_root`), else
    :class:`~loaders.errors.SourceConfigError`.
    """

    model_config = ConfigDict(extra="forbid")

    loader: dict[str, Any]
    items: list[ItemRef] | None = None
    items_file: str | None = None
    scan_directory: bool = False
    pattern: str = Field("*", description="Glob for scan_directory.")

    @model_validator(mode="after")
    def _one_source(self) -> "ItemsConfig":
        given = sum([self.items is not None, self.items_file is not None, self.scan_directory])
        if given != 1:
            raise ValueError("give exactly one of items, items_file, scan_directory")
        return self

    @classmethod
    def parse(cls, text_or_path: str) -> "ItemsConfig":
        path = Path(text_or_path)
        if not text_or_path.lstrip().startswith("{") and path.exists():
            text_or_path = path.read_text()
        return cls.model_validate_json(text_or_path)

    def iter_items(self) -> Iterator[ItemRef]:
        if self.items is not None:
            yield from self.items
        elif self.items_file is not None:
            with open(self.items_file) as handle:
                for line in handle:
                    if line.strip():
                        yield ItemRef.model_validate_json(line)
        else:
            root = self.loader.get("root_dir") or self.loader.get("root")
            if not root:
                raise ValueError("scan_directory needs a local_file loader with root_dir")
            from loaders.errors import SourceConfigError
            from loaders.settings import LoaderSettings

            base = LoaderSettings().check_root(root)
            if not base.is_dir():
                raise SourceConfigError(f"scan_directory: root_dir {ascii(str(root))[:120]} is not a directory")
            for path in sorted(p for p in base.rglob(self.pattern) if p.is_file()):
                relative = path.relative_to(base).as_posix()
                yield ItemRef(object_id=path.stem, meta={"path": relative})
