"""Lambda deployment packages: each zip kept once by content (its CodeSha256) and extracted once,
safely (no absolute paths, no '..', no links out, bounded size: Lambda's 250 MB unzipped)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

MAX_UNZIPPED = 250 * 1024 * 1024


class CodeError(Exception):
    """The package cannot be used; the message is meant for the caller (InvalidParameterValueException)."""


def code_sha256(data: bytes) -> str:
    """Lambda's CodeSha256: the base64 of the package's SHA-256 digest."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class FunctionCode:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _key(self, sha: str) -> str:
        return base64.urlsafe_b64decode(sha).hex()

    def zip_path(self, sha: str) -> Path:
        return self.root / "zips" / f"{self._key(sha)}.zip"

    def save(self, data: bytes) -> tuple[str, int]:
        """Check and keep a package; (CodeSha256, CodeSize)."""
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                self._check(zf)
        except zipfile.BadZipFile:
            raise CodeError(
                "Could not unzip uploaded file. Please check your file, then try to upload again."
            ) from None
        sha = code_sha256(data)
        path = self.zip_path(sha)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return sha, len(data)

    @staticmethod
    def _check(zf: zipfile.ZipFile) -> None:
        total = 0
        for info in zf.infolist():
            name = info.filename
            parts = Path(name).parts
            if name.startswith("/") or ".." in parts or (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise CodeError(f"The deployment package contains an unsafe path: {name!r}.")
            total += info.file_size
        if total > MAX_UNZIPPED:
            raise CodeError(f"Unzipped size must be smaller than {MAX_UNZIPPED} bytes")

    def extracted(self, sha: str) -> Path:
        """The package's files (LAMBDA_TASK_ROOT), extracted on first use."""
        out = self.root / "tasks" / self._key(sha)
        if out.is_dir():
            return out
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".extract-"))
        try:
            with zipfile.ZipFile(self.zip_path(sha)) as zf:
                self._check(zf)
                zf.extractall(staging)
            out.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):  # another extraction won: use it
                os.rename(staging, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return out
