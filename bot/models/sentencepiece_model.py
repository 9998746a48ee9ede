"""Read a sentencepiece `tokenizer.model` into a `Vocab`: its pieces with their scores and types
(the types from the model proto itself), and its special ids."""

from __future__ import annotations

from pathlib import Path

from bot.errors import ConversionError
from bot.models.layout import Vocab

# sentencepiece's piece types; GGUF's tokenizer.ggml.token_type uses the same numbers.
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = range(1, 7)


def read_sentencepiece(path: Path) -> Vocab:
    """Read a sentencepiece `tokenizer.model` (its own pieces; added tokens are `read_vocab`'s)."""
    import sentencepiece

    try:
        proto = path.read_bytes()
    except OSError as exc:
        raise ConversionError(f"cannot read the tokenizer {path}: {exc.strerror or exc}") from exc
    try:
        sp = sentencepiece.SentencePieceProcessor(model_proto=proto)
    except Exception as exc:  # sentencepiece raises RuntimeError or OSError
        raise ConversionError(f"{path} is not a sentencepiece model: {exc}") from exc
    n = sp.vocab_size()
    # The processor does not expose "user defined"; the model proto does.
    types = _piece_types(proto)
    if len(types) != n:
        raise ConversionError(f"{path}: cannot read the piece types of the sentencepiece model")
    return Vocab(
        pieces=[sp.id_to_piece(i) for i in range(n)],
        scores=[sp.get_score(i) for i in range(n)],
        types=types,
        bos_id=sp.bos_id(),
        eos_id=sp.eos_id(),
        unk_id=sp.unk_id(),
        pad_id=sp.pad_id(),
    )


def _piece_types(proto: bytes) -> list[int]:
    """The `type` of each `pieces` entry (field 1) of a sentencepiece ModelProto."""
    types = []
    for field, value in _proto_fields(proto):
        if field == 1 and isinstance(value, bytes):
            piece_type = TOKEN_NORMAL
            for sub_field, sub_value in _proto_fields(value):
                if sub_field == 3 and isinstance(sub_value, int):
                    piece_type = sub_value
            types.append(piece_type)
    return types


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Top-level (field number, value) pairs of a protobuf message; fixed-size values as bytes."""
    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ConversionError("malformed sentencepiece model")
        if pos > len(buf):
            raise ConversionError("malformed sentencepiece model")
        fields.append((field, value))
    return fields


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ConversionError("malformed sentencepiece model")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
