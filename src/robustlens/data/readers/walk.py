"""Listing the files of a data folder without being fooled by symbolic links.

:func:`walk_files` is the one walk over a data folder: the ``folder`` reader and the streaming
:class:`~robustlens.data.loader.FileLoader` (through :func:`~robustlens.data.readers.folder.scan_folder`)
and the cache's fingerprint (:func:`robustlens.data.cache.fingerprint`) all list files with it,
so what is read and what is fingerprinted are the same files.

Symbolic links are followed, with the inodes of the folders visited tracked:

- a link to a folder of the tree itself (``ln -s .. train/a/up``, a loop) or to a folder
  already read by another path is skipped: every folder is read once, at its real place;
- a link that leads out of the data folder is followed, and said;
- a broken link (even ``README.txt``), or one that loops on itself, is skipped;
- a special file (a FIFO, a device) is skipped, since reading it could block.

Each of these is reported once per walk as a :class:`DataWarning` with a few examples.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path


class DataWarning(UserWarning):
    """Something in a data folder was skipped or followed (links, special files, unreadable folders)."""


_NOTES = {
    "loop": "skipped {n} symbolic link(s) to a folder already read (a loop, or a second path to it)",
    "outside": "followed {n} symbolic link(s) out of the data folder",
    "broken": "skipped {n} broken symbolic link(s)",
    "special": "skipped {n} special file(s) (not a regular file or folder)",
    "unreadable": "skipped {n} folder(s) that could not be read",
}


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _key(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _tree_dirs(root: str) -> set[tuple[int, int]]:
    """The (device, inode) of every real (not linked) folder under ``root``, hidden ones left out."""
    keys = {_key(root)}
    for dirpath, dirnames, _ in os.walk(root, followlinks=False):
        # os.walk lists links to folders among dirnames even when it does not follow them
        dirnames[:] = [d for d in dirnames if not _is_hidden(d) and not os.path.islink(os.path.join(dirpath, d))]
        for d in dirnames:
            try:
                keys.add(_key(os.path.join(dirpath, d)))
            except OSError:
                pass
    return keys


def _inside(target: str, real_root: str) -> bool:
    return os.path.commonpath([target, real_root]) == real_root


def _entries(d: str, notes: dict[str, list[str]]) -> list[os.DirEntry]:
    try:
        with os.scandir(d) as it:
            return sorted((e for e in it if not _is_hidden(e.name)), key=lambda e: e.name)
    except OSError as e:
        notes["unreadable"].append(f"{d} ({type(e).__name__})")
        return []


def _classify(e: os.DirEntry) -> str:
    """``"dir"``, ``"file"``, ``"broken"`` or ``"special"`` (links followed)."""
    try:
        if e.is_dir():
            return "dir"
        if e.is_file():
            return "file"
    except OSError:  # ELOOP: a link to itself
        return "broken"
    return "broken" if e.is_symlink() and not os.path.exists(e.path) else "special"


def walk_files(root: Path | str) -> list[str]:
    """The path (``root`` joined with the names below it, as text) of every regular file under
    ``root``, hidden files and folders left out, in ``os.walk``'s top-down order with names
    sorted: a folder's files, then each sub-folder in turn.

    Symbolic links are followed as the module docstring says; what was skipped or followed is
    one :class:`DataWarning` per kind.
    """
    top = os.fspath(root)
    real_root = os.path.realpath(top)
    tree = _tree_dirs(top)
    seen = set(tree)
    notes: dict[str, list[str]] = {k: [] for k in _NOTES}
    files: list[str] = []
    stack = [top]
    while stack:
        subdirs = []
        for e in _entries(stack.pop(), notes):
            kind = _classify(e)
            if kind in ("broken", "special"):
                notes[kind].append(e.path)
                continue
            link = e.is_symlink()
            if kind == "dir":
                key = _key(e.path)
                if link or key not in tree:  # reached through a link: each folder once
                    if key in seen:
                        notes["loop"].append(f"{e.path} -> {os.path.realpath(e.path)}")
                        continue
                    seen.add(key)
            if link and not _inside(os.path.realpath(e.path), real_root):
                notes["outside"].append(f"{e.path} -> {os.path.realpath(e.path)}")
            (subdirs if kind == "dir" else files).append(e.path)
        stack.extend(reversed(subdirs))
    _report(top, notes)
    return files


def _report(root: str, notes: dict[str, list[str]]) -> None:
    for kind, items in notes.items():
        if items:
            shown = ", ".join(items[:3]) + (f", ... ({len(items) - 3} more)" if len(items) > 3 else "")
            warnings.warn(f"robustlens: {root}: {_NOTES[kind].format(n=len(items))}: {shown}", DataWarning,
                          stacklevel=2)
