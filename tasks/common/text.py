"""A small deterministic word tokenizer with a vocabulary built from training captions.

Id 0 is padding and id 1 the unknown word, which augmentations also use as
the mask token. The vocabulary keeps the most frequent words (ties broken
alphabetically) up to a fixed size, so the embedding table's size is known
before any data are read.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import torch

PAD, UNK = 0, 1
SPECIALS = 2
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


class Vocabulary:
    def __init__(self, captions: Iterable[str], max_words: int):
        counts = Counter(w for caption in captions for w in words(caption))
        ranked = sorted(counts, key=lambda w: (-counts[w], w))[:max_words]
        self.ids = {w: i + SPECIALS for i, w in enumerate(ranked)}
        self.size = max_words + SPECIALS

    def encode(self, captions: Iterable[str], length: int) -> torch.Tensor:
        """(N, length) ids, truncated or padded with PAD at the end."""
        rows = []
        for caption in captions:
            ids = [self.ids.get(w, UNK) for w in words(caption)][:length]
            rows.append(ids + [PAD] * (length - len(ids)))
        return torch.tensor(rows, dtype=torch.long).view(-1, length)
