"""A word-level tokenizer for the synthetic world that keeps massshift's prompt contract.

Every invented name, every template word and every punctuation mark is one
token. Pre-tokenisation runs in three steps:

1. ``"\\n"`` is split out as a token of its own (the answer terminator);
2. a Metaspace step turns each space into ``"▁"`` glued to the word after it
   (``" Kestrav"`` -> ``"▁Kestrav"``), so spaces survive decoding;
3. punctuation (``? . :``) is split off as tokens of its own.

With this scheme ``"Q: {question}\\nA:"`` ends in the token ``":"`` and the
continuation ``" {answer}\\n"`` starts a new token (``"▁{answer}"``), so the
tokens of prompt + answer begin with exactly the tokens of the prompt: the
split-after-joint-encoding rule of lm-evaluation-harness holds with no token
spanning the boundary (lm-eval issue 1053). ``decode(encode(text)) == text``
for any text whose words are in the vocabulary.

The tokenizer is wrapped as a transformers fast tokenizer with ``<eos>``,
``<pad>`` and ``<unk>`` set and no BOS, and saved with ``save_pretrained``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

UNK = "<unk>"
PAD = "<pad>"
EOS = "<eos>"
SPECIAL_TOKENS: tuple[str, ...] = (UNK, PAD, EOS)
"""Special tokens, with ids 0, 1, 2 in this order."""

SPACE = "▁"
"""The Metaspace marker that stands for a space in front of a word."""

NEWLINE = "\n"


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(NEWLINE), behavior="isolated"),
            pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never", split=True),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )


def pre_tokenize(text: str) -> list[str]:
    """The word-level pieces of ``text`` (the tokens it encodes to, given a full vocabulary)."""
    return [piece for piece, _ in _pre_tokenizer().pre_tokenize_str(text)]


def build_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is every piece of ``texts``.

    Ids are deterministic: the special tokens first (``<unk>`` 0, ``<pad>`` 1,
    ``<eos>`` 2), then ``"\\n"`` and ``"▁"``, then the remaining pieces sorted.

    Args:
        texts: every text the tokenizer must cover exactly (the corpus, and the
            questions and answers of facts that are not in the corpus).
    """
    pieces: set[str] = set()
    pre = _pre_tokenizer()
    for text in texts:
        pieces.update(piece for piece, _ in pre.pre_tokenize_str(text))
    fixed = [*SPECIAL_TOKENS, NEWLINE, SPACE]
    vocab = {tok: i for i, tok in enumerate(fixed)}
    for piece in sorted(pieces - set(fixed)):
        vocab[piece] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre
    core.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="never", split=True)
    core.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token=UNK,
        pad_token=PAD,
        eos_token=EOS,
        clean_up_tokenization_spaces=False,
        padding_side="right",
    )
    logger.info("built a word-level tokenizer with %d tokens", len(vocab))
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, out_dir: str | os.PathLike[str]) -> Path:
    """Save ``tokenizer`` with ``save_pretrained`` into ``out_dir`` (created if missing)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    return out


def load_tokenizer(path: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """Load a tokenizer saved by :func:`save_tokenizer` (or any local tokenizer folder)."""
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer at {path} has no eos token; rebuild the world with `massshift world`")
    return tokenizer
