"""What fails one input object (and not the job): the exception's text is the FailureReason."""

from __future__ import annotations

from modelhost.jobs.filters import FilterError
from modelhost.jobs.inputs import InputError
from modelhost.jobs.invoke import ObjectFailed
from modelhost.jobs.splitters import SplitError
from modelhost.store.blobs import BlobError, BlobNotFound

OBJECT_ERRORS = (
    ObjectFailed,
    SplitError,
    InputError,
    FilterError,
    BlobError,
    BlobNotFound,
    UnicodeDecodeError,
    OSError,
    EOFError,
)
