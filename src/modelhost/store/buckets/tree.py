"""The bucket tree on disk: walking keys in S3's order, installing a file onto a key, pruning."""

from __future__ import annotations

import errno
import os
import shutil
import stat as stat_mod
from collections.abc import Iterator
from pathlib import Path

from modelhost.store.buckets.errors import InvalidArgument, InvalidRequest


def is_file(st: os.stat_result) -> bool:
    return stat_mod.S_ISREG(st.st_mode)


def walk(directory: Path, keyprefix: str, prefix: str, start_after: str) -> Iterator[tuple[str, os.stat_result]]:
    try:
        with os.scandir(directory) as it:
            entries = []
            for e in it:
                try:
                    is_dir = e.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                entries.append((keyprefix + e.name + ("/" if is_dir else ""), is_dir, e))
    except (FileNotFoundError, NotADirectoryError):
        return
    entries.sort(key=lambda t: t[0])
    for key, is_dir, entry in entries:
        if is_dir:
            if not (key.startswith(prefix) or prefix.startswith(key)):
                continue
            if start_after >= key and not start_after.startswith(key):
                continue  # every key under this directory sorts before start_after
            yield from walk(Path(entry.path), key, prefix, start_after)
        else:
            if not key.startswith(prefix) or key <= start_after:
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            if is_file(st):
                yield key, st


def install(tmp: Path, path: Path, root: Path) -> None:
    """os.replace with the parent directories made; a directory in the way is InvalidArgument."""
    for _attempt in range(3):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise InvalidArgument(
                "The local bucket store keeps objects as files: a key cannot extend another object's key "
                f"as a directory ({path.relative_to(root).as_posix()}).",
            ) from None
        try:
            os.replace(tmp, path)
            return
        except FileNotFoundError:
            continue  # a concurrent delete pruned the parent: make it again
        except IsADirectoryError:
            raise InvalidArgument(
                "The local bucket store keeps objects as files: this key is a prefix of other keys "
                f"({path.relative_to(root).as_posix()}/...).",
            ) from None
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # buckets/ on another file system than the data dir: copy next to the target, then rename.
            side = path.with_name(f".{path.name}.mh-{os.getpid()}.tmp")
            shutil.copyfile(tmp, side)
            os.replace(side, path)
            tmp.unlink()
            return
    raise InvalidRequest("The object could not be written: its directory kept disappearing.")


def prune_empty_dirs(directory: Path, root: Path) -> None:
    while directory != root and root in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
