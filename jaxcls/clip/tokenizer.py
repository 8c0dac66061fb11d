"""CLIP's byte-level BPE tokenizer, without torch: text -> int32 ids [N, 77].

Text is cleaned as CLIP cleans it (ftfy's `fix_text` when ftfy is installed, HTML entities
unescaped twice, runs of whitespace to one space, lowercased), split into words, numbers
(one digit each) and punctuation runs, each piece written in a 256-symbol byte alphabet and
merged by the ranked pairs of `bpe_simple_vocab_16e6.txt.gz` (OpenAI, MIT licence, shipped
beside this file). A row is start-of-text, the ids, end-of-text, then zeros; a text longer than
the context is cut, its last id replaced by end-of-text.
"""

import functools
import gzip
import html
import itertools
import os

import numpy as np
import regex

VOCAB_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          "bpe_simple_vocab_16e6.txt.gz")
CONTEXT_LENGTH = 77
NUM_MERGES = 49152 - 256 - 2  # the merges CLIP's 49,408-id vocabulary uses
SOT, EOT = "<start_of_text>", "<end_of_text>"
END_OF_WORD = "</w>"
# Special tokens, English contractions, letter runs, single digits, other non-space runs.
_PIECES = regex.compile(
    "|".join(map(regex.escape, (SOT, EOT))) +
    r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)


@functools.cache
def byte_alphabet() -> dict[int, str]:
    """Each byte's printable stand-in: the 188 printable Latin-1 bytes stand for themselves,
    the other 68 (controls, space, NBSP, soft hyphen) for chr(256), chr(257), ... in byte order.
    The dict's order is the order of the first 256 vocabulary ids."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in set(printable)]
    return {**{b: chr(b) for b in printable},
            **{b: chr(256 + k) for k, b in enumerate(others)}}


def clean(text: str) -> str:
    """CLIP's text cleaning: ftfy (if installed), HTML unescaping, whitespace, lower case."""
    try:
        import ftfy
    except ImportError:  # ftfy only repairs mojibake; plain text is unchanged without it
        pass
    else:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


class Tokenizer:
    """`Tokenizer()(["a photo of a cat."])` -> int32 [1, 77]."""

    def __init__(self, vocab_file: str = VOCAB_FILE):
        with gzip.open(vocab_file, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]  # line 0: a header
        symbols = list(byte_alphabet().values())
        vocab = [*symbols, *(s + END_OF_WORD for s in symbols), *("".join(m) for m in merges),
                 SOT, EOT]
        self.ids = {s: i for i, s in enumerate(vocab)}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.sot, self.eot = self.ids[SOT], self.ids[EOT]
        self._words = {SOT: [SOT], EOT: [EOT]}  # BPE of each word seen, by its spelling

    @property
    def vocab_size(self) -> int:
        return len(self.ids)

    def bpe(self, word: str) -> list[str]:
        """The vocabulary symbols of one word (in the byte alphabet): starting from its
        characters (the last marked end-of-word), the best-ranked adjacent pair is merged,
        everywhere it occurs, until no adjacent pair is a merge."""
        if word in self._words:
            return self._words[word]
        parts = [*word[:-1], word[-1] + END_OF_WORD]
        while len(parts) > 1:
            best = min(itertools.pairwise(parts), key=lambda p: self.ranks.get(p, NUM_MERGES))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._words[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        """The ids of `text`, without start/end-of-text."""
        alphabet = byte_alphabet()
        ids = []
        for piece in _PIECES.findall(clean(text)):
            word = "".join(alphabet[b] for b in piece.encode("utf-8"))
            ids.extend(self.ids[s] for s in self.bpe(word))
        return ids

    def __call__(self, texts: str | list[str], context_length: int = CONTEXT_LENGTH
                 ) -> np.ndarray:
        """int32 [N, context_length]: start-of-text, ids, end-of-text, zeros."""
        texts = [texts] if isinstance(texts, str) else texts
        out = np.zeros((len(texts), context_length), np.int32)
        for row, text in zip(out, texts, strict=True):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > context_length:
                ids = [*ids[:context_length - 1], self.eot]
            row[:len(ids)] = ids
        return out


@functools.cache
def default() -> Tokenizer:
    """The shared tokenizer of the shipped vocabulary (read once per process)."""
    return Tokenizer()
