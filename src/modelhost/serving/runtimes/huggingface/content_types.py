"""MIME types of the SageMaker HF inference toolkit (``sagemaker_huggingface_inference_toolkit.content_types``).

``JSONLINES`` is a modelhost addition (one request per line); the toolkit itself only has the others.
"""

from __future__ import annotations

JSON = "application/json"
CSV = "text/csv"
OCTET_STREAM = "application/octet-stream"
ANY = "*/*"
NPY = "application/x-npy"
JSONLINES = "application/jsonlines"
UTF8_TYPES = [JSON, CSV]

JPEG = "image/jpeg"
PNG = "image/png"
TIFF = "image/tiff"
BMP = "image/bmp"
GIF = "image/gif"
WEBP = "image/webp"
X_IMAGE = "image/x-image"
VISION_TYPES = [JPEG, PNG, TIFF, BMP, GIF, WEBP, X_IMAGE]

FLAC = "audio/x-flac"
MP3 = "audio/mpeg"
WAV = "audio/wave"
OGG = "audio/ogg"
X_AUDIO = "audio/x-audio"
AUDIO_TYPES = [FLAC, MP3, WAV, OGG, X_AUDIO]
