"""Token counts for servers that report no usage: an estimate from a GPT-style pre-split (a word is
one token plus one per further 6 letters, up to 3 digits are one token, punctuation one per 2
characters, a whitespace run one), close to real BPE counts for English and code."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from codeact.lm.base import Message

_PIECES = re.compile(r" ?([A-Za-z]+)| ?(\d{1,3})| ?([^\sA-Za-z\d]+)|\s+")
# Chat formats wrap each message in a few special tokens (role markers, separators).
_PER_MESSAGE = 4


def count_tokens(text: str) -> int:
    total = 0
    for word, _digits, punctuation in _PIECES.findall(text):
        if word:
            total += 1 + (len(word) - 1) // 6
        elif punctuation:
            total += math.ceil(len(punctuation) / 2)
        else:
            total += 1
    return total


def count_message_tokens(messages: Sequence[Message]) -> int:
    return sum(count_tokens(m["content"]) + _PER_MESSAGE for m in messages) + 2
