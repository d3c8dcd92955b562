"""Chat pre-pass: what Twitch chat writes that a voice should not read as written.

`chat_prepass` runs before NeMo's WFST text normaliser. It handles only what NeMo does not know about chat:
@handles, links, emotes and emoticons, emoji, stretched letters, repeated punctuation, shouting in capitals,
chat abbreviations and leetspeak. Everything it does not recognise passes through unchanged; in particular digits,
money, times, dates, ordinals and units stay as they are for NeMo (digits only become letters inside leetspeak words).

`needs_wfst` is the fast path: it says whether a (pre-passed) piece has anything NeMo could change, so that plain
answer text skips the slow WFST.

Both are pure functions: deterministic, regexes compiled once at import, well under a millisecond per chat line.
"""

from __future__ import annotations

import re
from itertools import product

from spark_runtime.normalise.chat_words import (
    ABBREVIATIONS,
    ACRONYMS,
    DOUBLE_WORDS,
    EMOTES,
    EMOTICONS,
    LEET_L_WORDS,
    LEET_SKIP,
)

__all__ = ["EMOTES", "chat_prepass", "needs_wfst"]

# Caps words without a vowel are acronyms too ("HTML", "NSFW"), except interjections ("HMM", "SHHH", "BRRR").
_NO_VOWEL = re.compile(r"[^AEIOUY]+")
_INTERJECTION = re.compile(r"H+M+|M+|S+H+|B+R+|G+R+|P+F+T*|T+S+K+|Z+", re.IGNORECASE)

_ROMAN = re.compile(r"(?=[MDCLXVI]{2,}$)M{0,3}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})")

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t"})

# --------------------------------------------------------------------------------------------------------------------
# Patterns, compiled once.
# --------------------------------------------------------------------------------------------------------------------
_SLOT0 = 0xE000  # private-use characters stand in for finished pieces (links, handles, emote words)
_PUA = re.compile("[\ue000-\uf8ff]")

_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\u2300-\u23ff\ufe0e\ufe0f\u200d\u20e3"
    "\U000e0020-\U000e007f\u3030\u303d\u3297\u3299]+"
)

_MD_LINK = re.compile(r"\[([^\]\n]{1,200})\]\((?:https?://|www\.)[^)\s]+\)")
_TLDS = "com|net|org|tv|gg|io|co|ly|be|app|dev|ai|uk|de|xyz|edu|gov|fm"
_URL = re.compile(
    rf"""(?ix)
    (?:\bhttps?://|(?<![\w@.-])www\.)[^\s<>"]+
    | (?<![\w@.-])(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+(?:{_TLDS})\b(?:[/?#][^\s<>"]*)?
    """
)
_URL_TAIL = ".,!?;:)'\"]"

_HANDLE = re.compile(r"(?<![\w@])@([A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)")
_XPAIR = re.compile(r"((?=[xX]*x)(?=[xX]*X)[xX]{2,3})(.+?)((?=[xX]*x)(?=[xX]*X)[xX]{2,3})")
_XPART = re.compile(r"[xX]{2,3}")
_HANDLE_LEET = re.compile(r"(?<=[A-Za-z])[01357]+(?=[A-Za-z])")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")

_EMOTE_ALT = "|".join(re.escape(name) for name in sorted(EMOTES, key=len, reverse=True))
_EMOTE = rf"(?<![\w@#/:])(?:{_EMOTE_ALT})(?![\w'])"
_EMOTE_RUN = re.compile(rf"{_EMOTE}(?:\s+{_EMOTE})*")
_EMOTICON = re.compile(
    r"(?<!\S)(?:"
    + "|".join(re.escape(e) for e in sorted(EMOTICONS, key=len, reverse=True))
    + r"|<3+|:[A-Za-z0-9_+-]{2,}:)(?=$|\s|[.,!?])"
)

_PUNCT_RUN = re.compile(r"[!?]{2,}")
_DOTS = re.compile(r"\.{4,}")

_WORD = re.compile(r"(?<![\w'])[A-Za-z]+(?:'[A-Za-z]+)*(?![\w'])")
_STRETCH = re.compile(r"([A-Za-z])\1{2,}", re.IGNORECASE)
_LOWER = re.compile("[a-z]")
_SENTENCE_START = re.compile(r"(^|[.!?]\s+)([a-z])")

_ABBR = re.compile(
    r"(?<![\w'@#/.-])(?:" + "|".join(sorted(ABBREVIATIONS, key=len, reverse=True)) + r")(?![\w'/-]|\.\w)",
    re.IGNORECASE,
)
_TITLE_AFTER = re.compile(r"\.\s+[A-Z]")
_WITHOUT = re.compile(r"(?<![\w/])w/o(?![\w/])", re.IGNORECASE)
_WITH = re.compile(r"(?<![\w/])w/(?=\s|$|[A-Za-z])", re.IGNORECASE)
_ARE = re.compile(r"(?:^|(?<=[A-Za-z] ))r(?= [A-Za-z])")

# Starts and ends with a letter ("n00b", "h4x0r"), or is letters and one final "0" ("pr0", "br0"): a final digit is
# otherwise a model or version ("mp3", "PS5", "win10").
_LEET_TOKEN = re.compile(
    r"(?<![\w.:/$#@-])(?:[A-Za-z][A-Za-z0-9]*[0-9][A-Za-z0-9]*[A-Za-z]|[A-Za-z]{2,}0)(?![\w/-]|[.:]\w)"
)
_MODEL_PLURAL = re.compile(r"[A-Za-z]+[0-9]+s")

_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.!?;:])(?!\w)")
_DOUBLE_COMMA = re.compile(r"([,;:])(?:\s*[,;:])+")
_COMMA_THEN_END = re.compile(r"[,;:]+\s*([.!?])")
_LEADING_PUNCT = re.compile(r"^(?:[\s,;:!?]|\.(?!\d))+")
_ALNUM = re.compile(r"[^\W_]")


# --------------------------------------------------------------------------------------------------------------------
# The pre-pass.
# --------------------------------------------------------------------------------------------------------------------
def chat_prepass(text: str) -> str:
    """Rewrites chat or answer text into what a voice should read; unknown things pass through unchanged."""
    slots: list[str] = []

    def stash(spoken: str) -> str:
        if not spoken:
            return " "
        if len(slots) >= 0x1000:  # absurdly long input: no more stand-ins, the words go in directly
            return spoken
        slots.append(spoken)
        return chr(_SLOT0 + len(slots) - 1)

    text = _PUA.sub("", text)
    text = _EMOJI.sub(" ", text)
    text = _MD_LINK.sub(lambda m: m.group(1), text)
    text = _URL.sub(lambda m: _link(m.group(), stash), text)
    text = _HANDLE.sub(lambda m: stash(_spoken_handle(m.group(1))), text)
    text = _EMOTE_RUN.sub(lambda m: stash(_spoken_emotes(m.group())), text)
    text = _EMOTICON.sub(" ", text)
    text = _PUNCT_RUN.sub(_one_punct, text)
    text = _DOTS.sub("...", text)
    text = _WORD.sub(_unstretch, text)
    text = _uncap(text)
    text = _WITHOUT.sub("without", text)
    text = _WITH.sub(lambda m: "with" if m.string[m.end() : m.end() + 1] in ("", " ") else "with ", text)
    text = _ABBR.sub(_expand, text)
    text = _ARE.sub("are", text)
    text = _LEET_TOKEN.sub(_unleet, text)
    text = _number_shorthand(text)

    if slots:
        text = _PUA.sub(lambda m: slots[ord(m.group()) - _SLOT0], text)
    return _tidy(text)


# Number shorthand NeMo's grammars read wrongly ("24/7" -> "twenty four sevenths", "$10k" ->
# "dollar ten k", "#1" -> "hash one", "3x" -> "three x", "16GB" -> "sixteen GB", "98765" digit by
# digit): rewritten into forms they read right. Digits stay digits for the grammars.
_ROUND_THE_CLOCK = re.compile(r"(?<![\w/])24/7(?![\w/])")
_NUMBER_SIGN = re.compile(r"(?<![\w&#])#(?=\d)")
_TIMES = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[xX](?![\w])")
_DOLLARS_K = re.compile(r"(?<![\w$])\$(\d+(?:\.\d+)?)\s?k(?![\w])")
_THOUSAND = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?k(?![\w])")
_BYTES = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?([KMGT])B(?![\w])")
_BYTE_NAMES = {"K": "kilobytes", "M": "megabytes", "G": "gigabytes", "T": "terabytes"}
_LONG_NUMBER = re.compile(r"(?<![\w.,:/$£€¥#-])([1-9]\d{4,8})(?![\w.,:/%])")


def _number_shorthand(text: str) -> str:
    if not any(ch.isdigit() for ch in text):
        return text
    text = _ROUND_THE_CLOCK.sub("twenty-four seven", text)
    text = _NUMBER_SIGN.sub("number ", text)
    text = _TIMES.sub(r"\1 times", text)
    text = _DOLLARS_K.sub(r"\1 thousand dollars", text)
    text = _THOUSAND.sub(r"\1 thousand", text)
    text = _BYTES.sub(lambda m: f"{m.group(1)} {_BYTE_NAMES[m.group(2)]}", text)
    return _LONG_NUMBER.sub(lambda m: f"{int(m.group(1)):,}", text)  # 98765 -> 98,765: a cardinal, not digits


def _link(url: str, stash) -> str:
    core = url.rstrip(_URL_TAIL)
    return stash("a link") + url[len(core) :]


def _spoken_handle(name: str) -> str:
    """The name said aloud: "xX_gamer_Xx" -> "gamer", "CoolCat99" -> "Cool Cat", "n00bmaster69" -> "noobmaster"."""
    pair = _XPAIR.fullmatch(name)
    if pair:
        name = pair.group(2)
    parts = [p for p in re.split(r"[_-]+", name) if p]
    while len(parts) > 1 and _XPART.fullmatch(parts[0]):
        parts.pop(0)
    while len(parts) > 1 and _XPART.fullmatch(parts[-1]):
        parts.pop()
    words: list[str] = []
    for part in parts:
        if _XPART.fullmatch(part) and len(parts) > 1:
            continue
        part = _HANDLE_LEET.sub(lambda m: m.group().translate(_LEET), part)
        for piece in re.split(r"[0-9]+", part):
            for word in _CAMEL.split(piece):
                if not word:
                    continue
                if len(word) >= 4 and word.isupper() and word not in ACRONYMS:
                    word = word.lower()
                words.append(word)
    return " ".join(words) or name


def _spoken_emotes(run: str) -> str:
    words: list[str] = []
    for token in run.split():
        spoken = EMOTES[token]
        if spoken and (not words or words[-1] != spoken):
            words.append(spoken)
    return " ".join(words)


def _one_punct(m: re.Match[str]) -> str:
    run = m.group()
    if "?" in run and "!" in run:
        return "?!"
    return run[0]


def _unstretch(m: re.Match[str]) -> str:
    """Letters repeated 3+ times collapse: "sooooo" -> "so", "cooool" -> "cool" (a known double), "AAA" stays."""
    word = m.group()
    runs = list(_STRETCH.finditer(word))
    if not runs:
        return word
    if word.isupper() and (word in ACRONYMS or _ROMAN.fullmatch(word) or (len(word) == 3 and len(set(word)) == 1)):
        return word  # "XXX", "III", "VIII", "AAA", "IEEE"
    if set(word.lower()) == {"z"}:
        return word  # "zzz": sleep
    if not word.isupper():  # "XXXTentacion": three capitals in a mixed-case word are a name, not a stretch
        runs = [run for run in runs if not (run.group().isupper() and len(run.group()) == 3)]
        if not runs:
            return word
    runs = runs[:4]
    pieces: list[str] = []
    last = 0
    for run in runs:
        pieces.append(word[last : run.start()])
        last = run.end()
    tail = word[last:]
    letters = [run.group()[:2] for run in runs]
    for lengths in product((2, 1), repeat=len(runs)):
        candidate = "".join(p + r[:n] for p, r, n in zip(pieces, letters, lengths, strict=True)) + tail
        if all(n == 1 for n in lengths) or candidate.lower() in DOUBLE_WORDS:
            return candidate
    return word  # unreachable: the all-singles candidate always returns


def _keeps_caps(word: str) -> bool:
    if word in ACRONYMS or _ROMAN.fullmatch(word):
        return True
    return bool(_NO_VOWEL.fullmatch(word)) and not _INTERJECTION.fullmatch(word)


def _uncap(text: str) -> str:
    """Shouting: a whole line in capitals becomes sentence case; else caps words of 4+ letters become lower case."""
    words = _WORD.findall(text)
    letters = sum(len(w) for w in words)
    if len(words) >= 2 and letters >= 4 and not _LOWER.search(text):

        def lower(m: re.Match[str]) -> str:
            word = m.group()
            if word == "I" or word.startswith("I'"):
                return word[:1] + word[1:].lower()
            return word if _keeps_caps(word) else word.lower()

        text = _WORD.sub(lower, text)
        return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)

    def lower_shout(m: re.Match[str]) -> str:
        word = m.group()
        if sum(c.isalpha() for c in word) >= 4 and word.isupper() and not _keeps_caps(word):
            return word.lower()
        return word

    return _WORD.sub(lower_shout, text)


def _expand(m: re.Match[str]) -> str:
    found = m.group()
    spoken = ABBREVIATIONS[found.lower()]
    before = m.string[: m.start()].rstrip()
    sentence_start = not before or before[-1] in ".!?"
    if len(found) > 1 and found[0].isupper() and found[1:].islower():
        # Title case mid-sentence is a name ("Ur"), and so is a title before ". Name" ("Fr. Murphy").
        if not sentence_start or _TITLE_AFTER.match(m.string, m.end()):
            return found
    if found[0].isupper() and spoken[0].islower() and sentence_start:
        spoken = spoken[0].upper() + spoken[1:]
    return spoken


def _unleet(m: re.Match[str]) -> str:
    """Leetspeak words: "n00b" -> "noob", "h4x0r" -> "haxor"; model names and units ("mp3", "MP3s", "m4a") stay."""
    token = m.group()
    digits = {c for c in token if c.isdigit()}
    if not digits <= set("013457") or token.lower() in LEET_SKIP or _MODEL_PLURAL.fullmatch(token):
        return token
    word = token.translate(_LEET)
    ones = [i for i, c in enumerate(token) if c == "1"][:4]
    if ones:
        for choice in product("il", repeat=len(ones)):
            chars = list(word)
            for i, c in zip(ones, choice, strict=True):
                chars[i] = c
            candidate = "".join(chars)
            if candidate.lower() in LEET_L_WORDS:
                word = candidate
                break
    if not word.isalpha():
        return token
    letters = [c for c in token if c.isalpha()]
    if all(c.isupper() for c in letters):
        word = word.upper()
        if len(word) >= 4 and not _keeps_caps(word):
            word = word.lower()
    return word


def _tidy(text: str) -> str:
    text = _SPACES.sub(" ", text).strip()
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _DOUBLE_COMMA.sub(r"\1", text)
    text = _COMMA_THEN_END.sub(r"\1", text)
    text = _LEADING_PUNCT.sub("", text)
    if not _ALNUM.search(text):
        return ""
    return text


# --------------------------------------------------------------------------------------------------------------------
# The fast path: does NeMo's WFST have anything to do here?
# --------------------------------------------------------------------------------------------------------------------
_PERIOD_ABBREVIATIONS = (
    "Dr Mr Mrs Ms St Jr Sr Mt Ave Prof Capt Gen Lt Sgt vs etc approx No"
    " Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec"
).split()
_UNITS = "km kg cm mm mg ml mph kph kmh lb lbs oz ft yd mi KB MB GB TB Hz kHz MHz GHz fps ms".split()
_WFST = re.compile(
    r"\d|[$£€¥%&#+=/°@]"  # numbers, times, dates, money, percent, symbols, emails
    r"|(?<![\w.])(?:" + "|".join(_PERIOD_ABBREVIATIONS) + r")\."  # "Dr.", "vs.", "etc.", "Jan."
    r"|(?<![\w.])(?:e\.g|i\.e)\.|\bvs\b"
    r"|\b(?:" + "|".join(_UNITS) + r")\b"  # unit tokens
    r"|\b(?=[MDCLXVI]{2,}\b)M{0,3}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})\b"  # "World War II"
)


def needs_wfst(text: str) -> bool:
    """True when the (pre-passed) text has anything NeMo's WFST normaliser should see; plain words -> False."""
    return _WFST.search(text) is not None
