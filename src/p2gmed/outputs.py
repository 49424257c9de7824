"""Output folders that never cost the user a file: p2g writes only where it may, and removes only what it wrote.

The rule every writing command follows (docs/reliability.md):

- p2g writes into a new or empty folder, or into one that holds its record `.p2g-outputs.json` (the files p2g
  wrote there, relative paths). Anything else is refused before the first byte is written.
- A name is recorded *before* its file is written, so a run killed half-way still knows what it owns.
- p2g never writes into a folder of input data (a case folder, a data set, a reference folder).
- A file p2g did not record is never replaced or removed; one it did record is replaced only with `--force`
  (where replacing is a legitimate wish) and removed only by `remove_recorded`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from p2gmed.errors import InputError

#: the record of what p2g wrote into a folder
MANIFEST = ".p2g-outputs.json"


def _within(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return path == folder or folder in path.parents


def check_outside_inputs(out: str | Path, inputs: Iterable[str | Path], option: str = "--out") -> None:
    """Refuse an output folder that is, or lies inside, a folder of input data.

    Raises:
        InputError: naming the output and the input folder.
    """
    out = Path(out)
    for folder in inputs:
        folder = Path(folder)
        if folder.is_dir() and _within(out, folder):
            where = "is" if Path(os.path.abspath(out)).resolve() == folder.resolve() else "lies inside"
            raise InputError(f"{option} {out} {where} the input data folder {folder}; p2g never writes among its "
                             "inputs, choose a separate output folder")


def entries(folder: Path) -> list[str]:
    """Names in `folder` other than p2g's record (sorted); [] for a missing folder."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)


class OutputFolder:
    """A folder p2g may write into (see the module docstring). `claim` checks; nothing is written until `record`.

    Args:
        path: the folder.
        option: how the user named it (for messages), e.g. "--out".
    """

    def __init__(self, path: str | Path, option: str = "--out"):
        self.path = Path(path)
        self.option = option

    @classmethod
    def claim(cls, path: str | Path, *, option: str = "--out", inputs: Iterable[str | Path] = (),
              shared: bool = False) -> OutputFolder:
        """Check that p2g may write into `path`.

        Args:
            path: the output folder (need not exist).
            option: the option that named it, for messages.
            inputs: folders of input data that `path` must not be or lie in.
            shared: the folder may also hold the user's own files (the folder of an output *file*, e.g. the CSV
                of `p2g evaluate`); then only the names written are checked, by `check_targets`.

        Raises:
            InputError: `path` is a file, lies in input data, or (unless `shared`) holds files p2g did not write.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InputError(f"{option} {path} is an existing file, not a folder")
        check_outside_inputs(path, inputs, option)
        folder = cls(path, option)
        if not shared and not folder.is_recorded():
            foreign = entries(path)
            if foreign:
                raise InputError(f"{option} {path} is not empty and was not written by p2g (it holds {foreign[0]}"
                                 f"{' and more' if len(foreign) > 1 else ''}); choose an empty or new folder")
        return folder

    # ------------------------------------------------------------------------------------------ the record
    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    def is_recorded(self) -> bool:
        return self.manifest.is_file()

    def files(self) -> list[str]:
        """Relative paths (POSIX) p2g recorded in this folder; [] without a record or with an unreadable one."""
        try:
            data = json.loads(self.manifest.read_text(encoding="utf-8"))
            return [str(f) for f in data.get("files", []) if isinstance(f, str)]
        except (OSError, ValueError, AttributeError):
            return []

    def owns(self, name: str | Path) -> bool:
        return self._rel(name) in self.files()

    def _rel(self, name: str | Path) -> str:
        name = Path(name)
        if name.is_absolute():
            name = Path(os.path.abspath(name)).relative_to(Path(os.path.abspath(self.path)))
        return name.as_posix()

    def _write(self, files: list[str], command: str | None) -> None:
        from p2gmed import __version__
        from p2gmed.io import write_text

        try:
            old = json.loads(self.manifest.read_text(encoding="utf-8")) if self.is_recorded() else {}
        except (OSError, ValueError):
            old = {}
        commands = [c for c in old.get("commands", []) if isinstance(c, str)] if isinstance(old, dict) else []
        if command and command not in commands:
            commands.append(command)
        record = {"written_by": "p2gmed", "version": str(__version__), "commands": commands, "files": files}
        write_text(self.manifest, json.dumps(record, indent=1) + "\n")

    def check_targets(
        self, names: Iterable[str | Path], force: bool = False, force_option: str | None = "--force"
    ) -> None:
        """Refuse to write `names` (relative to the folder) over a file p2g did not record, or over its own
        earlier output without `force`.

        Raises:
            InputError: naming the first such file.
        """
        own = set(self.files())
        for name in names:
            target = self.path / name
            if not (target.exists() or target.is_symlink()):
                continue
            if target.is_dir() or self._rel(name) not in own:
                raise InputError(f"{target} already exists and was not written by p2g; it is left alone, choose "
                                 f"another {self.option}")
            if not force:
                hint = f"pass {force_option} to replace p2g's own earlier outputs, or " if force_option else ""
                raise InputError(f"{target} already exists from an earlier p2g run; {hint}choose another "
                                 f"{self.option}")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise updates of the record between processes writing into one folder (`p2g predict --part`)."""
        import fcntl

        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def record(self, names: Iterable[str | Path], command: str | None = None) -> None:
        """Create the folder and add `names` to its record (call before writing them)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with self._locked():
            files = self.files()
            files += [n for n in (self._rel(n) for n in names) if n not in files]
            self._write(files, command)

    @contextlib.contextmanager
    def writing(self, names: Iterable[str | Path], command: str | None = None) -> Iterator[OutputFolder]:
        """Record `names`, then run the block that writes them. If the block fails, the names it did not write
        are dropped from the record again, and the folders (subfolders of nested names such as
        `from-t1n/c_t2w.nii.gz` included) and record this call created and left empty are removed: a refused or
        failed command leaves nothing behind."""
        names = [self._rel(n) for n in names]
        created_folder, created_record = not self.path.exists(), not self.is_recorded()
        subfolders = {p for n in names for p in (self.path / n).parents
                      if self.path in p.parents and not p.exists()}
        self.record(names, command)
        try:
            yield self
        except BaseException:
            unwritten = {n for n in names if not (self.path / n).exists()}
            for folder in sorted(subfolders, key=lambda p: len(p.parts), reverse=True):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            with self._locked():
                kept = [f for f in self.files() if f not in unwritten]
                if not (created_record and not kept):
                    self._write(kept, None)
            if created_record and not kept:
                self.manifest.unlink(missing_ok=True)
                if created_folder and not any(self.path.iterdir()):
                    self.path.rmdir()
            raise

    def record_tree(self, under: str | Path, command: str | None = None) -> None:
        """Record every file now under the subfolder `under` (outputs of a finished p2g command there)."""
        root = self.path / under
        found = [p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST] if root.is_dir() else []
        if root.is_file():
            found = [root]
        self.record([p.relative_to(self.path) for p in found], command)

    def remove_recorded(self, under: str | Path | None = None) -> list[Path]:
        """Remove the recorded files (all, or those under the subfolder `under`) and their orphan temporary
        files, then the subfolders that became empty. Files p2g did not record stay where they are.

        Returns:
            The files removed.
        """
        prefix = None if under is None else self._rel(under)
        removed, kept = [], []
        for name in self.files():
            if prefix is not None and name != prefix and not name.startswith(prefix.rstrip("/") + "/"):
                kept.append(name)
                continue
            target = self.path / name
            if target.is_file() or target.is_symlink():
                target.unlink()
                removed.append(target)
            removed += remove_orphan_temporaries(target.parent, [target.name])
        parents = {p for r in removed for p in r.parents if self.path in p.parents}
        for folder in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if self.is_recorded():
            if kept or entries(self.path):
                self._write(kept, None)
            else:  # nothing of p2g's and nothing of the user's left: the record goes too
                self.manifest.unlink()
                if not any(self.path.iterdir()):
                    self.path.rmdir()
        return removed


def remove_orphan_temporaries(folder: str | Path, names: Iterable[str]) -> list[Path]:
    """Delete the temporary files `p2gmed.io.atomic_path` left beside `names` when a run was killed mid-write.

    They are named `.<name>.<random 8 characters><suffixes of name>`; nothing else matches.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for name in names:
        suffix = "".join(Path(name).suffixes)
        for candidate in folder.glob(f".{name}.*"):
            middle = candidate.name[len(name) + 2 : len(candidate.name) - len(suffix) if suffix else None]
            if candidate.is_file() and candidate.name.endswith(suffix) and len(middle) == 8 and "." not in middle:
                candidate.unlink()
                removed.append(candidate)
    return removed


def remove_recorded_tree(path: str | Path, top: OutputFolder | None = None) -> list[Path]:
    """Remove what p2g recorded at or below `path`: every record found in that tree, and the entries of `top`
    (an enclosing recorded folder) that lie under `path`. Used to redo a step of `p2g demo` / `p2g reproduce`."""
    path = Path(path)
    removed: list[Path] = []
    if path.is_dir():
        for manifest in sorted(path.rglob(MANIFEST), key=lambda p: len(p.parts), reverse=True):
            removed += OutputFolder(manifest.parent).remove_recorded()
    if top is not None and top.path in path.parents:
        removed += top.remove_recorded(under=path.relative_to(top.path))
    return removed
