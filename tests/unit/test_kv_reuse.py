"""Context shifting's plan: which cached tokens a new prompt keeps, and where they move."""

from __future__ import annotations

import itertools

from spark_runtime.engines.kv_reuse import Move, ReusePlan, plan_reuse

SYSTEM = list(range(1000, 1040))  # 40 tokens that never change
EX = [list(range(2000 + 100 * i, 2000 + 100 * i + 25)) for i in range(6)]  # six 25-token exchanges
NEW = [9001, 9002, 9003]


def flat(*parts: list[int]) -> list[int]:
    return [t for p in parts for t in p]


def test_an_appended_prompt_reuses_its_prefix_and_moves_nothing():
    cached = flat(SYSTEM, EX[0], EX[1])
    plan = plan_reuse(cached, flat(SYSTEM, EX[0], EX[1], EX[2], NEW))
    assert plan == ReusePlan(prefix=len(cached))
    assert plan.kept == len(cached) and plan.shifted == 0


def test_a_trimmed_history_moves_left_behind_the_fixed_system_prompt():
    cached = flat(SYSTEM, EX[0], EX[1], EX[2], EX[3], NEW)
    prompt = flat(SYSTEM, EX[2], EX[3], [7, 7, 7])
    plan = plan_reuse(cached, prompt)
    assert plan.prefix == len(SYSTEM)
    assert plan.moves == (Move(src=len(SYSTEM) + 50, dst=len(SYSTEM), length=50),)
    assert plan.kept == len(SYSTEM) + 50  # only the new message is left to read


def test_an_exchange_removed_from_the_middle_leaves_two_runs():
    cached = flat(SYSTEM, EX[0], EX[1], EX[2], EX[3], EX[4])
    prompt = flat(SYSTEM, EX[1], EX[3], EX[4], NEW)  # EX[0] trimmed, EX[2] moderated away
    plan = plan_reuse(cached, prompt)
    assert plan.moves == (
        Move(src=65, dst=40, length=25),
        Move(src=115, dst=65, length=50),
    )
    assert plan.kept == len(prompt) - len(NEW)
    # the runs are contiguous in the prompt and come from the cache in order
    assert all(b.dst == a.dst + a.length and b.src >= a.src + a.length for a, b in itertools.pairwise(plan.moves))


def test_runs_shorter_than_the_minimum_are_read_again():
    cached = flat(SYSTEM, EX[0], EX[1][:10], EX[2])
    prompt = flat(SYSTEM, EX[1][:10], NEW)
    assert plan_reuse(cached, prompt, min_chunk=16).moves == ()
    assert plan_reuse(cached, prompt, min_chunk=8).moves == (Move(src=65, dst=40, length=10),)
    assert plan_reuse(cached, flat(SYSTEM, EX[2], NEW), min_chunk=0).moves == ()  # prefix caching only


def test_at_least_one_prompt_token_is_left_to_read():
    cached = flat(SYSTEM, EX[0], EX[1])
    assert plan_reuse(cached, cached).kept == len(cached) - 1
    assert plan_reuse(cached, flat(SYSTEM, EX[1])).kept == len(SYSTEM) + 24
    assert plan_reuse([], [1]).kept == 0 and plan_reuse(cached, []).kept == 0


def test_new_text_before_the_history_means_the_history_is_read_again():
    # Keys computed without the new text in view would be a worse approximation: nothing after
    # the first new token is reused.
    cached = flat(SYSTEM, EX[0], EX[1])
    prompt = flat(SYSTEM[:20], [5, 6], SYSTEM[20:], EX[0], EX[1], NEW)
    assert plan_reuse(cached, prompt) == ReusePlan(prefix=20)
