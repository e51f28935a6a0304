"""The toolkit's MIME type constants (``JSON``, ``CSV``, ``NPY``, ``VISION_TYPES``, ``AUDIO_TYPES``, ...)."""

from modelhost.serving.runtimes.huggingface.content_types import *  # noqa: F403
from modelhost.serving.runtimes.huggingface.content_types import (  # noqa: F401
    ANY,
    AUDIO_TYPES,
    BMP,
    CSV,
    FLAC,
    GIF,
    JPEG,
    JSON,
    JSONLINES,
    MP3,
    NPY,
    OCTET_STREAM,
    OGG,
    PNG,
    TIFF,
    UTF8_TYPES,
    VISION_TYPES,
    WAV,
    WEBP,
    X_AUDIO,
    X_IMAGE,
)
