"""Context shifting: reuse a KV cache whose prompt lost text in the middle, without re-reading it.

A live stream's prompt is the persona's fixed system prompt, then the conversation history, then
the new chat. When the history window drops its oldest exchanges, the new prompt shares only the
system prompt with what a slot has cached; everything after it would be prefilled again (about
2 s for 500 tokens on 2 CPU cores). Yet the history the prompt keeps is still in the cache, only
further right. `plan_reuse` finds those runs of cached tokens that reappear, in order, right
after the shared prefix; `apply_plan` deletes the cache entries between them and shifts each run
left in place (llama.cpp's sequence remove and position add; the rotary position of each key is
rotated to its new place on the next decode). The system prompt never moves: it is the attention
sink that StreamingLLM showed a model needs to stay fluent once the start of its context is gone.

A shifted key is not bit-identical to a re-read one: it was computed while the dropped exchanges
were still in view. tests/unit/test_llama_context_shift.py measures how far that moves the next-token
distribution against a full re-prefill of the same prompt, and states the tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# A run shorter than this is re-read rather than shifted: short runs are template fragments
# (a role header, a quote) that happen to match, computed in another context entirely.
DEFAULT_MIN_CHUNK = 16


@dataclass(frozen=True, slots=True)
class Move:
    src: int  # where the run starts in the cache
    dst: int  # where it starts in the new prompt (dst < src: runs only move left)
    length: int


@dataclass(frozen=True, slots=True)
class ReusePlan:
    prefix: int  # tokens shared from the start, kept where they are
    moves: tuple[Move, ...] = ()  # later cached runs, in order, each right after the previous one

    @property
    def kept(self) -> int:
        """Prompt tokens [0, kept) are in the cache once the plan is applied."""
        return self.prefix + sum(m.length for m in self.moves)

    @property
    def shifted(self) -> int:
        return self.kept - self.prefix


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def plan_reuse(cached: Sequence[int], prompt: Sequence[int], *, min_chunk: int = DEFAULT_MIN_CHUNK) -> ReusePlan:
    """What of `cached` the prompt can keep: its common prefix, then every run of at least
    `min_chunk` cached tokens that continues the prompt where the kept part ends, scanning the
    cache left to right. At least one prompt token is left to read (its logits start sampling).
    `min_chunk` <= 0 keeps the prefix only (plain prefix caching)."""
    cached, prompt = list(cached), list(prompt)
    limit = len(prompt) - 1  # the last prompt token is always decoded
    prefix = min(common_prefix(cached, prompt), max(0, limit))
    moves: list[Move] = []
    if min_chunk > 0:
        head_c = head_p = prefix
        while head_c < len(cached) and head_p < limit:
            n = 0
            while head_c + n < len(cached) and head_p + n < limit and cached[head_c + n] == prompt[head_p + n]:
                n += 1
            if n >= min_chunk:
                moves.append(Move(head_c, head_p, n))
                head_c += n
                head_p += n
            else:
                head_c += 1
    return ReusePlan(prefix, tuple(moves))


def apply_plan(lib: Any, llama: Any, plan: ReusePlan) -> int:
    """Rearranges `llama`'s KV cache (sequence 0) and token record to `plan`; returns how many
    tokens are cached afterwards (the prompt's first `plan.kept`). llama-cpp-python's own
    prefix match then reads only the rest of the prompt."""
    mem = lib.llama_get_memory(llama._ctx.ctx)
    ids = llama.input_ids
    for move in plan.moves:
        # [dst, src) holds the dropped tokens and the gaps earlier moves left; the run moves into it.
        lib.llama_memory_seq_rm(mem, 0, move.dst, move.src)
        lib.llama_memory_seq_add(mem, 0, move.src, move.src + move.length, move.dst - move.src)
        ids[move.dst : move.dst + move.length] = ids[move.src : move.src + move.length]
    lib.llama_memory_seq_rm(mem, 0, plan.kept, -1)
    llama.n_tokens = plan.kept
    return plan.kept


def can_shift(lib: Any, llama: Any) -> bool:
    """Whether the model's cache supports moving positions (rotary embeddings do)."""
    mem = lib.llama_get_memory(llama._ctx.ctx)
    return mem is not None and bool(lib.llama_memory_can_shift(mem))
