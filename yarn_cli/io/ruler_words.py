"""The word lists RULER draws from, read from the ``wonderwords`` package as RULER reads them."""

from __future__ import annotations

from functools import lru_cache

from yarn_cli.core.verify.ruler.build import WordLists
from yarn_cli.core.verify.ruler.words import WordPairs
from yarn_cli.errors import InputError


@lru_cache(maxsize=1)
def load() -> WordLists:
    try:
        from wonderwords import random_word
    except ImportError as exc:
        from yarn_cli.io.packages import needs

        raise InputError(needs("RULER's tasks", "wonderwords")) from exc
    read = random_word._get_words_from_text_file  # what RULER's generators call
    nouns, adjectives, verbs = read("nounlist.txt"), read("adjectivelist.txt"), read("verblist.txt")
    return WordLists(WordPairs(adjectives, nouns), list(nouns) + list(adjectives) + list(verbs))
