"""Builds a general-domain English corpus from text every Debian/Ubuntu machine with Python has
offline, for `gems train --general-corpus` (one paragraph per line).

Sources: the licence texts in /usr/share/common-licenses, the copyright notes in
/usr/share/doc/*/copyright, and the docstrings of Python's standard library (modules, classes,
functions). Paragraphs (blocks between blank lines, re-flowed to one line, cut to at most
MAX_WORDS words) of at least MIN_WORDS words are kept once each (licence text repeats across packages), then shuffled with a
fixed seed so that any `--general-corpus-tokens` budget reads a mix of every source.

Run (standard library only):

    python3 scripts/offline_general_corpus.py /tmp/general-corpus.txt

It prints how many paragraphs and words it wrote. Real pre-training text (web, encyclopedic) is
better; this is what can be had without a network.
"""

import glob
import importlib
import inspect
import random
import re
import sys

MIN_WORDS = 20
# Longer paragraphs are cut into pieces of at most this many words: gems reads 128 tokens of a
# paragraph (about 100 words of English), so a word counted against the budget is a word used.
MAX_WORDS = 80
SEED = 0

# Standard-library modules whose import has no side effect worth worrying about.
MODULES = """
abc argparse array ast asyncio base64 bisect builtins calendar cmath codecs collections
concurrent.futures configparser contextlib copy csv dataclasses datetime decimal difflib
email enum fractions functools gettext glob gzip hashlib heapq hmac html http.client
http.server imaplib inspect io ipaddress itertools json logging lzma mailbox math
mimetypes multiprocessing operator os pathlib pickle platform plistlib pprint queue random
re sched secrets select selectors shelve shlex shutil signal smtplib socket sqlite3 ssl
statistics string struct subprocess tarfile tempfile textwrap threading time timeit token
tokenize trace traceback types typing unicodedata unittest urllib.parse urllib.request
uuid warnings weakref xml.dom.minidom xml.etree.ElementTree zipfile zlib
""".split()


def paragraphs(text):
    """Blocks between blank lines, each re-flowed to one line and cut to MAX_WORDS words."""
    for block in re.split(r"\n\s*\n", text):
        words = block.split()
        for start in range(0, len(words), MAX_WORDS):
            piece = words[start : start + MAX_WORDS]
            if len(piece) >= MIN_WORDS:
                yield " ".join(piece)


def licence_texts():
    for path in sorted(glob.glob("/usr/share/common-licenses/*")) + sorted(
        glob.glob("/usr/share/doc/*/copyright")
    ):
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                yield file.read()
        except (IsADirectoryError, PermissionError):
            continue


def docstrings():
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        yield inspect.getdoc(module) or ""
        for _, member in inspect.getmembers(module):
            if inspect.isclass(member) or inspect.isfunction(member):
                yield inspect.getdoc(member) or ""
                if inspect.isclass(member):
                    for _, method in inspect.getmembers(member, inspect.isfunction):
                        yield inspect.getdoc(method) or ""


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT.txt")
    seen, kept = set(), []
    for text in list(licence_texts()) + list(docstrings()):
        for paragraph in paragraphs(text):
            if paragraph not in seen:
                seen.add(paragraph)
                kept.append(paragraph)
    random.Random(SEED).shuffle(kept)
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        for paragraph in kept:
            out.write(paragraph + "\n")
    words = sum(len(p.split()) for p in kept)
    print(f"{sys.argv[1]}: {len(kept)} paragraphs, {words} words")


if __name__ == "__main__":
    main()
