"""Our NeMo FastPitch text frontend gives NeMo's own ids (recorded in fixtures; no NeMo needed here).

Regenerate the fixtures with a NeMo venv: tests/fixtures/nemo_frontend/make_fixtures.py.
"""

import json
from pathlib import Path

import pytest

from spark_runtime.engines.nemo_frontend import FrontendMismatch, NemoTextFrontend, check_against

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nemo_frontend"
KINDS = ["chars", "ipa", "ipa_mixed"]


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def cases() -> list:
    out = []
    for name in KINDS:
        data = load(name)
        for n, (text, ids) in enumerate(zip(data["sentences"], data["expected"], strict=True)):
            out.append(pytest.param(name, text, ids, id=f"{name}-{n}"))
    return out


@pytest.fixture(scope="module")
def frontends() -> dict[str, NemoTextFrontend]:
    return {name: NemoTextFrontend.from_description(load(name)["description"]) for name in KINDS}


@pytest.mark.parametrize(("name", "text", "ids"), cases())
def test_encode_matches_nemo(frontends, name, text, ids):
    front = frontends[name]
    assert front.decode(front.encode(text)) == front.decode(ids)
    assert front.encode(text) == ids


@pytest.mark.parametrize("name", KINDS)
def test_check_against_accepts_nemo_ids(frontends, name):
    data = load(name)
    assert len(data["sentences"]) >= 35
    check_against(frontends[name], data["sentences"], data["expected"])


@pytest.mark.parametrize("name", KINDS)
def test_where_nemo_raises_we_give_padding_only(frontends, name):
    """NeMo's IPA tokenizer crashes (IndexError) on an all-space text; we encode it as the padding."""
    front = frontends[name]
    for case in load(name)["nemo_raises"]:
        assert front.decode(front.encode(case["sentence"])) == [front.space, front.space]


def test_fixtures_cover_the_g2p_rules(frontends):
    ipa = frontends["ipa"]
    assert ipa.symbols("cats") == [" ", "ˈ", "k", "æ", "t", "s", " "]  # plural of a word ending in t -> s
    assert ipa.symbols("Jones's")[-3:] == ["ɪ", "z", " "]  # possessive of a word ending in s -> ɪz
    assert ipa.symbols("read") == [" ", "#R", "#E", "#A", "#D", " "]  # heteronym -> graphemes
    assert ipa.symbols("the") == [" ", "ð", "ə", " "]  # ambiguous, not ignored -> first pronunciation
    assert frontends["ipa_mixed"].symbols("the") == [" ", "T", "H", "E", " "]  # ambiguous, ignored -> graphemes


def test_check_against_names_the_first_differing_sentence(frontends):
    data = load("ipa")
    expected = [list(ids) for ids in data["expected"]]
    n = data["sentences"].index("Hello world!")
    expected[n][2] = expected[n][3]  # tamper with NeMo's answer
    with pytest.raises(FrontendMismatch) as err:
        check_against(frontends["ipa"], data["sentences"], expected)
    message = str(err.value)
    assert f"sentence {n} 'Hello world!'" in message
    assert "position 2" in message
    assert "NeMo: [' ', 'h', 'ˈ', 'ˈ'" in message and "ours: [' ', 'h', 'ə'" in message


def test_check_against_wants_one_encoding_per_sentence(frontends):
    with pytest.raises(FrontendMismatch, match="2 sentences but 1"):
        check_against(frontends["chars"], ["a", "b"], [[0]])


def test_unknown_symbols_are_skipped_quietly(frontends, caplog):
    chars = frontends["chars"]
    with caplog.at_level("DEBUG", logger="spark_runtime.engines.nemo_frontend"):
        assert chars.decode(chars.encode("a😀b")) == [" ", "a", "b", " "]
    assert [r.levelname for r in caplog.records] == ["DEBUG"]


def test_unsupported_kind_is_refused():
    with pytest.raises(ValueError, match="unsupported NeMo tokenizer kind"):
        NemoTextFrontend.from_description({"kind": "arpabet"})
