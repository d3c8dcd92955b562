"""GBNF grammars for the llama.cpp engine: parsed once per text, copied per request, checked each step.

What llama-cpp-python 0.3.36 does with a grammar decides how this module handles one:
- `LlamaGrammar.from_string` only keeps the text. Every `Llama.generate(grammar=...)` call parses
  it again (`llama_sampler_init_grammar` in `_init_sampler`) into a llama.cpp grammar sampler, whose
  parse stacks advance with each accepted token: the parsed form is per-generation state.
- A text llama.cpp cannot parse makes `llama_sampler_init_grammar` return NULL, which `Llama` adds
  to its sampler chain unchecked: the process dies (SIGSEGV) at the first token. The parser's reason
  goes to file descriptor 2 (fprintf), a missing `root` or left recursion to the debug log.
- A grammar that parses but reaches a point no token can continue (a literal "\\x00", an empty class
  such as [^\\x00-\\U0010FFFF]) leaves every logit at -inf; the chain then accepts a token the grammar
  refuses and llama.cpp aborts the process ("fatal error" in llama-grammar.cpp).
- The parser recurses once per nesting level: ~20,000 nested parentheses overflow an 8 MB stack.

So each distinct text is parsed here once (reasons captured), kept as a template sampler in a small
LRU cache, and every request decodes with its own clone (`llama_sampler_clone` copies the rules and
the start state; about 40 us for a 20 KB grammar, against 0.5 ms to parse it). The clone decides
each step together with the request's sampler chain (penalties, then greedy or top-k/top-p
sampling, as `Llama` builds it: see GrammarGuide); a step that leaves no candidate ends the request
with an error before llama.cpp sees a token the grammar refuses.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import re
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from spark_runtime.engines.bad_words import BadWords
from spark_runtime.errors import RequestError

GRAMMAR_CACHE_SIZE = 32
MAX_GRAMMAR_NESTING = 256  # parentheses; far below what overflows a thread's stack in the parser

_PARSER_ERROR = re.compile(r"error parsing grammar: ([^\n]*)")
_GENERIC_FAILURE = "failed to parse grammar"
_CAPTURE_LOCK = threading.Lock()  # file descriptor 2 and llama.cpp's log callback are process-wide


def nesting_depth(text: str) -> int:
    """Deepest parenthesis nesting outside literals, character classes and comments."""
    depth = deepest = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in '"[':
            close = '"' if c == '"' else "]"
            i += 1
            while i < n and text[i] != close:
                i += 2 if text[i] == "\\" else 1
        elif c == "#":
            while i < n and text[i] not in "\r\n":
                i += 1
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
        i += 1
    return deepest


def _reason(native_output: str, log: list[str]) -> str:
    """llama.cpp's own words for why a grammar failed, on one line."""
    match = _PARSER_ERROR.search(native_output)
    if match:
        reason = match.group(1).strip()
        if reason.endswith(" at"):  # the parser quotes the rest of the text, here nothing
            reason += " the end"
    else:
        said = [m.strip() for m in log if m.strip() and _GENERIC_FAILURE not in m]
        reason = said[0] if said else "llama.cpp could not parse it"
    return reason if len(reason) <= 160 else reason[:157] + "..."


@contextlib.contextmanager
def _captured(lib: Any) -> Iterator[tuple[list[str], list[str]]]:
    """Collects what llama.cpp says while the block runs: its log lines, and what it writes to
    stderr. File descriptor 2 is process-wide, so whatever else reaches it meanwhile is written
    back to stderr afterwards, with the parser's message, as it would have been."""
    log: list[str] = []
    native: list[str] = []

    @lib.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        log.append(text.decode("utf-8", "replace"))

    with _CAPTURE_LOCK, tempfile.TemporaryFile() as sink:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        lib.llama_log_set(collect, ctypes.c_void_p(0))
        try:
            yield native, log
        finally:
            lib.llama_log_set(_library_log_callback(), ctypes.c_void_p(0))
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            written = sink.read()
            if written:
                os.write(2, written)
            native.append(written.decode("utf-8", "replace"))


def _parse(lib: Any, vocab: Any, text: str) -> Any:
    """A grammar sampler for `text` (start state), or RequestError("grammar: <llama.cpp's reason>")."""
    depth = nesting_depth(text)
    if depth > MAX_GRAMMAR_NESTING:
        raise RequestError(f"grammar: parentheses nest {depth} deep; the limit is {MAX_GRAMMAR_NESTING}")
    with _captured(lib) as (native, log):
        sampler = lib.llama_sampler_init_grammar(vocab, text.encode("utf-8"), b"root")
    if not sampler:
        raise RequestError(f"grammar: {_reason(''.join(native), log)}")
    return sampler


def grammar_error(text: str) -> str | None:
    """Why llama.cpp refuses `text` as a GBNF grammar ("grammar: ..."), or None when it parses.

    Needs llama-cpp-python but no model (the parser does not look at a vocabulary). It checks the
    syntax, the `root` rule, undefined rules and left recursion; a grammar that parses can still
    reach a point no token continues, which only decoding finds (the engine then fails the request).
    """
    import llama_cpp

    try:
        sampler = _parse(llama_cpp, None, text)
    except RequestError as exc:
        return str(exc)
    llama_cpp.llama_sampler_free(sampler)
    return None


def _library_log_callback() -> Any:
    """The log callback llama-cpp-python installs at import (it honours `verbose`)."""
    from llama_cpp._logger import llama_log_callback

    return llama_log_callback


class GrammarCache:
    """Parsed grammars by text, least recently used dropped past `size`; thread-safe."""

    def __init__(self, lib: Any, vocab: Any, size: int = GRAMMAR_CACHE_SIZE) -> None:
        self._lib = lib
        self._vocab = vocab  # the grammar keeps this pointer: the model must outlive the cache
        self._n_vocab = int(lib.llama_vocab_n_tokens(vocab))
        self._size = size
        self._templates: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.parsed = 0  # texts handed to llama.cpp's parser (a test sees cache hits by it)

    def __len__(self) -> int:
        return len(self._templates)

    def guide(self, text: str) -> GrammarGuide:
        """A fresh per-request state for `text`; RequestError("grammar: ...") if it does not parse."""
        with self._lock:
            template = self._templates.get(text)
            if template is None:
                template = self._parse(text)
                self._templates[text] = template
                while len(self._templates) > self._size:
                    _, evicted = self._templates.popitem(last=False)
                    self._lib.llama_sampler_free(evicted)  # clones are independent copies
            else:
                self._templates.move_to_end(text)
            clone = self._lib.llama_sampler_clone(template)
        return GrammarGuide(self._lib, clone, self._n_vocab)

    def _parse(self, text: str) -> Any:
        self.parsed += 1
        return _parse(self._lib, self._vocab, text)

    def close(self) -> None:
        with self._lock:
            for template in self._templates.values():
                self._lib.llama_sampler_free(template)
            self._templates.clear()


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


class GrammarGuide:
    """One request's grammar state, checked against each step's choice before it is accepted.

    As llama.cpp's own common sampler does: the request's chain picks a token from all candidates
    and the grammar checks that one token; only when it refuses it is the grammar applied to the
    whole vocabulary (the cost of a grammar step) and the chain picks again among what is left.
    Greedy decoding gets the same token either way (the best allowed token); with sampling, a
    refused draw is redrawn from the tokens the grammar allows. A free-text grammar thus costs
    almost nothing per token; a forced literal costs a full grammar step per token.
    """

    def __init__(self, lib: Any, sampler: Any, n_vocab: int) -> None:
        if _TOKEN_DATA.itemsize != ctypes.sizeof(lib.llama_token_data):
            lib.llama_sampler_free(sampler)
            raise RuntimeError("llama_token_data changed layout: update spark_runtime/engines/llama_grammar.py")
        self._lib = lib
        self._sampler = sampler
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._candidates = np.zeros(n_vocab, _TOKEN_DATA)
        self._pointer = self._candidates.ctypes.data_as(lib.llama_token_data_p)
        self._one = (lib.llama_token_data * 1)()
        self.tokens: list[int] = []  # accepted so far

    def sample(self, chain: Any, ctx: Any, idx: int) -> int:
        """`llama_sampler_sample(chain, ctx, idx)` under the grammar; raises DeadEnd when the
        grammar leaves no token (llama.cpp would abort the process there)."""
        lib = self._lib
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, idx), shape=(len(self._candidates),))
        array = self._fill(logits)
        token = self._pick(chain, array)
        if not self._allows(token):
            array = self._fill(logits)
            lib.llama_sampler_apply(self._sampler, ctypes.byref(array))
            if not np.isfinite(self._candidates["logit"][: array.size]).any():
                raise DeadEnd
            token = self._pick(chain, array)
        lib.llama_sampler_accept(self._sampler, token)
        lib.llama_sampler_accept(chain, token)
        self.tokens.append(token)
        return token

    def _fill(self, logits: np.ndarray) -> Any:
        candidates = self._candidates
        candidates["id"] = self._ids  # samplers sort and truncate the array in place
        candidates["logit"] = logits
        candidates["p"] = 0.0
        return self._lib.llama_token_data_array(data=self._pointer, size=len(candidates), selected=-1, sorted=False)

    def _pick(self, chain: Any, array: Any) -> int:
        self._lib.llama_sampler_apply(chain, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            raise RuntimeError(f"the sampler chain selected no token ({array.selected} of {array.size})")
        return int(array.data[array.selected].id)

    def _allows(self, token: int) -> bool:
        one = self._one
        one[0].id, one[0].logit, one[0].p = token, 0.0, 0.0
        array = self._lib.llama_token_data_array(data=one, size=1, selected=-1, sorted=False)
        self._lib.llama_sampler_apply(self._sampler, ctypes.byref(array))
        return math.isfinite(one[0].logit)

    def close(self) -> None:
        if self._sampler is not None:
            self._lib.llama_sampler_free(self._sampler)
            self._sampler = None


class DeadEnd(Exception):
    """The grammar allows no token at this step."""


@functools.cache
def guided_llama_class(lib: Any) -> type:
    """`llama_cpp.Llama` whose sampling goes through a GrammarGuide while `guide` is set.

    `Llama.generate` builds its sampler chain (without a grammar: none is passed to it) and calls
    `self.sample(..., idx=...)` for every token; only that call is replaced.
    """

    class GuidedLlama(lib.Llama):  # type: ignore[misc, name-defined]
        guide: GrammarGuide | None = None
        bad: BadWords | None = None  # the request's bad words (spark_runtime/engines/bad_words.py)
        output_from = 0  # where the request's output starts in input_ids

        def sample(self, *args: Any, idx: int | None = None, **kwargs: Any) -> int:
            if self.bad is not None:
                self._mask_bad_words(self.bad, -1 if idx is None else idx - self.n_tokens)
            guide = self.guide
            if guide is None or self._sampler is None:
                return int(super().sample(*args, idx=idx, **kwargs))
            try:
                return guide.sample(self._sampler.sampler, self._ctx.ctx, -1 if idx is None else idx - self.n_tokens)
            except DeadEnd:
                so_far = self.detokenize(guide.tokens).decode("utf-8", "replace")
                raise RequestError(f"grammar: no token can continue it after {so_far!r}") from None

        def _mask_bad_words(self, bad: BadWords, ridx: int) -> None:
            """Masks the tokens that would complete a bad word, on the logits the sampler reads next."""
            banned = bad.banned(self.input_ids[self.output_from : self.n_tokens].tolist())
            if banned:
                logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx.ctx, ridx), shape=(self._n_vocab,))
                logits[list(banned)] = -np.inf

    return GuidedLlama
