"""GBNF checks for the llama.cpp engine that need llama.cpp's parser but no model (the engine's
decoding with a grammar is in test_llama_engine.py)."""

from __future__ import annotations

import pytest

from spark_runtime.engines.llama_grammar import MAX_GRAMMAR_NESTING, grammar_error, nesting_depth

pytest.importorskip("llama_cpp")


def test_nesting_depth_counts_only_grouping_parentheses():
    assert nesting_depth('root ::= ("a" ("b" | "c"))*') == 2
    # parentheses inside literals, classes (also escaped delimiters) and comments are text
    assert nesting_depth('root ::= "((\\"(" [()\\]] # (((\nx ::= ("y")') == 1
    assert nesting_depth("root ::= " + "(" * 300 + '"a"' + ")" * 300) == 300


@pytest.mark.parametrize(
    "grammar",
    [
        'root ::= ("yes" | "no")',
        'root ::= "collect(block=" blk ", count=" [1-9] ")"\nblk ::= "oak_log" | "stone"',
        "root ::= ",  # only the empty answer
        'root ::= "a" |',  # "a" or nothing
        'root ::= [^"\\n]{1,60}  # a comment\n',
    ],
)
def test_valid_grammars_parse(grammar):
    assert grammar_error(grammar) is None


@pytest.mark.parametrize(
    ("grammar", "reason"),
    [
        ('foo ::= "x"', "grammar: grammar does not contain a 'root' symbol"),
        ('root ::= "abc', "grammar: unexpected end of input"),
        ('root ::= "a" foo', "grammar: Undefined rule identifier 'foo'"),
        ('root ::= ("a"', "grammar: expecting ')' at the end"),
        ("root ::= [a-", "grammar: unexpected end of input"),
        ('root ::= root "a"', "grammar: unsupported grammar, left recursion detected"),
        ('root ::= "a"{5000}', "grammar: number of repetitions exceeds sane defaults"),
        ('root ::= "\\q"', "grammar: unknown escape"),
        (
            "root ::= " + "(" * 20_000 + '"a"' + ")" * 20_000,
            f"grammar: parentheses nest 20000 deep; the limit is {MAX_GRAMMAR_NESTING}",
        ),
    ],
)
def test_malformed_grammars_get_llama_cpps_reason_without_killing_the_process(grammar, reason):
    # Each of these, handed to llama-cpp-python's own generate(grammar=...), ends the process
    # (NULL sampler: SIGSEGV; 20,000 nested parentheses: stack overflow in the parser).
    error = grammar_error(grammar)
    assert error is not None and error.startswith(reason), error
    assert "\n" not in error
