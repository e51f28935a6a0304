"""Local files as blobs: ``file:///abs/path`` and plain paths, the part both blob stores share.

A "prefix" is a file (itself), a directory (every file under it, with or without a trailing ``/``)
or a partial name (``/data/in/da`` for ``/data/in/data.csv``: the files of the parent directory whose
path starts with it), listed in path-string order as ``s3://`` keys are.
Writes are atomic: a temp file beside the target, then ``os.replace``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import stat as stat_mod
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from urllib.parse import unquote, urlparse

from modelhost.store.blobs import BlobError, BlobInfo, BlobNotFound, is_s3


class FileReader(io.RawIOBase):
    """A :class:`~modelhost.store.blobs.BlobReader` over an open file (a raw stream: wrap it in
    ``io.BufferedReader`` or read it in large pieces)."""

    def __init__(self, raw: io.FileIO, size: int) -> None:
        super().__init__()
        self._raw = raw
        self.size = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        return self._raw.readinto(buffer)

    def read(self, n: int = -1, /) -> bytes:
        return self._raw.read(n) or b""

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_file(path: Path, uri: str) -> FileReader:
    """Open a regular file for streaming; BlobNotFound when there is none."""
    try:
        raw = io.FileIO(path, "rb")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise BlobNotFound(f"{uri} does not exist") from None
    except OSError as exc:
        raise BlobError(f"{uri} cannot be read: {exc.strerror or exc}") from None
    st = os.fstat(raw.fileno())
    if not stat_mod.S_ISREG(st.st_mode):
        raw.close()
        raise BlobNotFound(f"{uri} does not exist")
    return FileReader(raw, st.st_size)


def install_file(tmp: Path, target: Path) -> None:
    """Move a finished file onto ``target`` atomically (parents made; across file systems by a copy
    beside the target, then a rename). ``tmp`` is gone afterwards, whatever happens."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            side = target.with_name(f".{target.name}.mh-{os.getpid()}.tmp")
            try:
                shutil.copyfile(tmp, side)
                os.replace(side, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    side.unlink()
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def walk_files(root: Path) -> Iterator[Path]:
    """Every file under a directory, sorted by path string (as S3 sorts keys)."""
    found = [Path(dirpath) / name for dirpath, _dirs, filenames in os.walk(root) for name in filenames]
    yield from sorted(found, key=lambda p: p.as_posix().encode("utf-8", "surrogateescape"))


class FileBlobs:
    """The BlobStore for ``file://`` URIs and plain paths (``s3://`` is refused: that is the other
    store's part)."""

    def __init__(self, staging: Path | None = None) -> None:
        self._staging = staging

    def path(self, uri: str) -> Path:
        if uri.startswith("file://"):
            return Path(unquote(urlparse(uri).path))
        if is_s3(uri):
            raise BlobError(f"no store for s3:// URIs here: {uri}")
        if "://" in uri:
            raise BlobError(f"unsupported URI scheme: {uri}")
        return Path(uri).expanduser().resolve()

    @staticmethod
    def _uri(uri: str, path: Path) -> str:
        """A listed file's URI, in the style of the URI that listed it."""
        return f"file://{path.as_posix()}" if uri.startswith("file://") else str(path)

    def stat(self, uri: str) -> BlobInfo:
        path = self.path(uri)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise BlobNotFound(f"{uri} does not exist") from None
        if not stat_mod.S_ISREG(st.st_mode):
            raise BlobNotFound(f"{uri} does not exist")
        return BlobInfo(uri, st.st_size, st.st_mtime)

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        root = self.path(prefix)
        if root.is_file():
            found: Iterator[Path] = iter([root])
        elif root.is_dir():
            found = walk_files(root)
        elif root.parent.is_dir():
            found = (p for p in walk_files(root.parent) if p.as_posix().startswith(root.as_posix()))
        else:
            found = iter(())
        first = next(found, None)
        if first is None:
            raise BlobNotFound(f"no objects under {prefix}")
        for path in (first, *found):
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                yield BlobInfo(self._uri(prefix, path), st.st_size, st.st_mtime)

    def open(self, uri: str) -> FileReader:
        return open_file(self.path(uri), uri)

    def local_path(self, uri: str) -> Path:
        path = self.path(uri)
        if not path.exists():
            raise BlobNotFound(f"{uri} does not exist")
        return path

    def check_writable(self, uri: str) -> None:
        path = self.path(uri)
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if existing != path and not existing.is_dir():
            raise BlobError(f"{uri} cannot be written: {existing} is not a directory")
        if not os.access(existing if existing.is_dir() else existing.parent, os.W_OK):
            raise BlobError(f"{uri} cannot be written: permission denied")

    def staging_dir(self) -> Path:
        staging = self._staging or Path(tempfile.gettempdir()) / "modelhost-staging"
        staging.mkdir(parents=True, exist_ok=True)
        return staging

    def put_bytes(self, uri: str, data: bytes, content_type: str | None = None) -> None:
        target = self.path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        install_file(Path(name), target)

    def put_file(self, uri: str, path: Path, content_type: str | None = None, md5: str | None = None) -> None:
        try:
            target = self.path(uri)
        except BlobError:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise
        install_file(path, target)

    def delete(self, uri: str) -> None:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
            self.path(uri).unlink()

    def batch(self) -> AbstractContextManager[None]:
        return nullcontext()

    def batch_now(self) -> AbstractContextManager[bool]:
        return nullcontext(False)  # (files and network writes block: always from a thread)
