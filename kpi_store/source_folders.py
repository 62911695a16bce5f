"""Where file data sources may live: the allowed folders, and the files that never qualify
(the store's own database, its key file and audit checkpoints)."""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

import sqlalchemy as sa

from . import keys
from .config import Settings
from .errors import ValidationError

DEFAULT_FOLDER_NAME = "sources"


@dataclass(frozen=True)
class SourceFolders:
    """Where file data sources (SQLite, DuckDB) may live, and the one file that never may:
    the store's own database. Paths are resolved (symlinks, ``..``) before any check."""

    folders: tuple[pathlib.Path, ...]
    store_file: pathlib.Path | None
    beside_store: pathlib.Path  # the sources/ folder beside the store (or under ./data)
    secrets: tuple[pathlib.Path, ...] = ()  # the key file and audit checkpoints

    @classmethod
    def from_settings(cls, settings: Settings) -> SourceFolders:
        store_url = sa.engine.make_url(settings.url)
        store_file = None
        if store_url.get_backend_name() == "sqlite" and store_url.database:
            store_file = pathlib.Path(store_url.database).expanduser().resolve()
        beside = keys.default_beside_store(settings, DEFAULT_FOLDER_NAME)
        secrets = tuple(
            path.resolve() for path in (keys.key_file(settings), keys.checkpoint_file(settings))
        )
        listed = [f.strip() for f in settings.source_dirs.split(os.pathsep) if f.strip()]
        folders = tuple(pathlib.Path(f).expanduser().resolve() for f in listed) or (beside,)
        return cls(folders=folders, store_file=store_file, beside_store=beside, secrets=secrets)

    @property
    def default(self) -> pathlib.Path:
        """Where the demo warehouse goes: ``sources/`` beside the store when that is
        allowed, else the first allowed folder."""
        if any(self.beside_store.is_relative_to(folder) for folder in self.folders):
            return self.beside_store
        return self.folders[0]

    def check(self, path: pathlib.Path, name: str = "") -> pathlib.Path:
        """``path`` resolved, if it lies inside an allowed folder and is not the store."""
        resolved = path.expanduser().resolve()
        what = f"Data source '{name}'" if name else "A data source"
        if self._is_store(resolved):
            raise ValidationError(
                f"{what} cannot be the KPI store's own database or one of its key files.",
                {"url": "the store itself"},
            )
        if not any(resolved.is_relative_to(folder) for folder in self.folders):
            shown = ", ".join(str(f) for f in self.folders)
            message = (
                f"{what} must be a file inside the allowed folders ({shown}); "
                f"{resolved} is not. An administrator can add folders with KPI_SOURCE_DIRS."
            )
            raise ValidationError(message, {"url": "outside the allowed folders"})
        return resolved

    def guarded_dirs(self) -> set[pathlib.Path]:
        """Folders whose own files no query may read: the store's and its secrets'."""
        files = [*self.secrets, *([self.store_file] if self.store_file else [])]
        return {f.parent for f in files}

    def _is_store(self, path: pathlib.Path) -> bool:
        if path in self.secrets:
            return True
        if self.store_file is None:
            return False
        if path == self.store_file:
            return True
        try:  # a hard link names the same file under another path
            return path.exists() and os.path.samefile(path, self.store_file)
        except OSError:
            return False
