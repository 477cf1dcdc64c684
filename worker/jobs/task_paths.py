"""Files and folders a task names must lie inside the directories the operator allows.

The ``qa_training`` and ``image_optimization`` kinds read a file or folder and write an output
folder that the enqueuing client names. The worker reads and writes with its own permissions, so
the operator's allow-list decides, as for the ``local_file`` loader: a path is usable when it is one
of ``CLICKTUNE_LOADER_ALLOWED_ROOTS`` or lies below one, after ``..`` and symlinks are resolved
(:meth:`loaders.settings.LoaderSettings.check_root`). Anything else refuses the task before it
touches the file system; the reason names the field and the setting, not the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from loaders.errors import SourceConfigError
from loaders.settings import LoaderSettings
from worker.lifecycle import TaskRefused


def confine_task_paths(kind: str, paths: Mapping[str, str | Path | None],
                       settings: LoaderSettings | None = None) -> dict[str, Path]:
    """The resolved ``paths`` (unset ones left out); :class:`TaskRefused` for the first outside
    the allowed roots."""
    settings = settings or LoaderSettings()
    confined: dict[str, Path] = {}
    for field, value in paths.items():
        if value is None or str(value) == "":
            continue
        try:
            confined[field] = settings.check_root(value)
        except SourceConfigError:
            raise TaskRefused(f"{kind} {field} is outside the directories this worker may use (the operator "
                              "lists them in CLICKTUNE_LOADER_ALLOWED_ROOTS)") from None
    return confined
