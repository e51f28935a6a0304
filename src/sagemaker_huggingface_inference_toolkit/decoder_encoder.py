"""``decode(content, content_type)`` and ``encode(prediction, accept)`` as in the toolkit."""

from modelhost.serving.runtimes.huggingface.decoder_encoder import (  # noqa: F401
    DECODERS,
    ENCODERS,
    JsonLines,
    UnsupportedFormatError,
    decode,
    decode_audio,
    decode_csv,
    decode_image,
    decode_json,
    decode_jsonlines,
    decode_npy,
    encode,
    encode_csv,
    encode_image,
    encode_json,
    encode_jsonlines,
    encode_npy,
)

_decoder_map = DECODERS
_encoder_map = ENCODERS
_array_to_npy = encode_npy
