"""The converter's vocabulary: tokenizer.model (sentencepiece) plus any added_tokens.json,
checked against the number of embedding rows.
"""

from __future__ import annotations

from pathlib import Path

from bot.errors import ConversionError
from bot.models.layout import Vocab, read_json
from bot.models.sentencepiece_model import TOKEN_USER_DEFINED, read_sentencepiece


def read_vocab(src_dir: Path, n_rows: int) -> Vocab:
    path = src_dir / "tokenizer.model"
    if not path.is_file():
        raise ConversionError(f"{src_dir} has no tokenizer.model (sentencepiece)")
    sp = read_sentencepiece(path)
    pieces, scores, types = list(sp.pieces), list(sp.scores), list(sp.types)
    pad_id = sp.pad_id
    added_path = src_dir / "added_tokens.json"
    n_added = 0
    if n_rows > len(pieces) and added_path.is_file():
        added = read_json(added_path)
        by_id = sorted((token_id, token) for token, token_id in added.items()
                       if isinstance(token_id, int) and token_id >= len(pieces))
        ids = [token_id for token_id, _ in by_id]
        if ids != list(range(len(pieces), len(pieces) + len(ids))):
            raise ConversionError(f"{added_path}: the added token ids are not consecutive after "
                                  f"the tokenizer's {len(pieces)} tokens")
        for token_id, token in by_id:
            pieces.append(token)
            scores.append(-1000.0)
            types.append(TOKEN_USER_DEFINED)
            if pad_id < 0 and token in ("[PAD]", "<pad>"):
                pad_id = token_id
        n_added = len(by_id)
    if len(pieces) != n_rows:
        source = f"tokenizer.model has {len(sp.pieces)}"
        if n_added:
            source += f" + {n_added} from added_tokens.json = {len(pieces)}"
        raise ConversionError(
            f"vocabulary size mismatch: {source} tokens but the embedding has {n_rows} rows"
        )
    return Vocab(pieces, scores, types, sp.bos_id, sp.eos_id, sp.unk_id, pad_id)
