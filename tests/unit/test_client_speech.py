"""Client speech pieces without sockets: chunker, playback accounting, audio helpers, LLM inputs."""

import asyncio

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from spark_client.speech.audio import SessionWav, read_wav, resample
from spark_client.speech.chunker import SpeechChunker
from spark_client.speech.llm import LLMClient, RenderedPrompt, SamplingOptions
from spark_client.speech.playback import PlaybackItem, Player


def chunk_all(deltas: list[str]) -> list:
    chunker = SpeechChunker()
    pieces = [p for d in deltas for p in chunker.feed(d)]
    return pieces + chunker.flush()


def test_first_piece_is_cut_at_an_early_clause():
    pieces = chunk_all(["[happy] Oh wow, hello", " there, chat! How", " are you doing today? Fine."])
    assert [p.text for p in pieces] == ["Oh wow,", "hello there, chat!", "How are you doing today?", "Fine."]
    assert pieces[0].emotions == ["happy"] and all(not p.emotions for p in pieces[1:])


def test_first_piece_is_ready_before_the_sentence_ends():
    chunker = SpeechChunker()
    assert chunker.feed("Well, ") == []  # too short to say on its own
    ready = chunker.feed("I think that, in the end")
    assert [p.text for p in ready] == ["Well, I think that,"]


def test_first_piece_without_punctuation_is_cut_after_a_few_words():
    chunker = SpeechChunker(first_max_words=8)
    assert chunker.feed("so today we are going to play a") == []
    ready = chunker.feed(" really fun")
    assert [p.text for p in ready] == ["so today we are going to play"]  # never on "a" / "really"
    assert [p.text for p in chunker.flush()] == ["a really fun"]


def test_tags_are_never_spoken_and_move_with_their_piece():
    pieces = chunk_all(["Hello. [sa", "d] I lost", " the game."])
    assert [p.text for p in pieces] == ["Hello.", "I lost the game."]
    assert pieces[1].emotions == ["sad"]


@given(st.lists(st.text(alphabet="abc ,.!?", min_size=1, max_size=8), max_size=20))
def test_pieces_keep_every_letter_in_order_and_cut_words_only_after_a_mark(deltas):
    """Waiting for the next word keeps every word whole; a piece cut the moment its mark arrives
    may end inside what becomes a longer word ("ab." then "c"), but only after a mark, and no
    letter is lost or moved."""
    text = "".join(deltas)
    waiting = SpeechChunker(wait_for_next_word=True)
    kept = [p for d in deltas for p in waiting.feed(d)] + waiting.flush()
    words = [w for w in text.split() if any(c.isalnum() for c in w)]
    assert [w for p in kept for w in p.text.split() if any(c.isalnum() for c in w)] == words
    pieces = chunk_all(deltas)
    assert "".join(ch for p in pieces for ch in p.text if ch.isalnum()) == "".join(ch for ch in text if ch.isalnum())
    for piece in pieces[:-1]:  # every piece but the flushed last ends on a mark or a whole word
        assert piece.text[-1] in ",;.!?" or piece.text.split()[-1] in text.split()


def test_a_piece_is_cut_the_moment_its_mark_arrives():
    chunker = SpeechChunker()
    assert [p.text for p in chunker.feed("I'm sorry,")] == ["I'm sorry,"]
    assert chunker.feed(" but no") == []  # later pieces end at sentence marks only
    assert [p.text for p in chunker.feed(" way!")] == ["but no way!"]
    assert [p.text for p in SpeechChunker().feed("Hey chat!")] == ["Hey chat!"]
    assert SpeechChunker(wait_for_next_word=True).feed("I'm sorry,") == []
    # not after a digit, a one-letter word or a title, and not at a colon
    for held in ("It costs 3,", "It is 2.", "Use e.", "Ask Dr.", "See https:"):
        assert SpeechChunker().feed(held) == [], held
    chunker = SpeechChunker()
    assert chunker.feed("It costs 3,") == [] and [p.text for p in chunker.feed("000 coins, ")] == [
        "It costs 3,000 coins,"
    ]
    chunker = SpeechChunker()
    assert chunker.feed("Ask Dr.") == [] and chunker.feed(" Kim about it") == []
    assert [p.text for p in chunker.feed(". Yes")] == ["Ask Dr. Kim about it."]


def test_resample_keeps_duration_and_wav_round_trips(tmp_path):
    tone = np.sin(np.linspace(0, 200 * np.pi, 22050)).astype(np.float32) * 0.5
    assert resample(tone, 22050, 16000).size == 16000
    wav = SessionWav(tmp_path / "s.wav", 16000)
    wav.write(tone, 22050)
    wav.close()
    audio, rate = read_wav(tmp_path / "s.wav")
    assert rate == 16000 and audio.size == 16000 and 0.45 < np.abs(audio).max() < 0.55


def test_player_plays_in_order_feeds_lip_sync_and_stops_on_interrupt(tmp_path):
    async def scenario():
        heard: list[tuple[int, int]] = []

        async def on_block(turn, block, rate):
            heard.append((turn, block.size))

        player = Player(SessionWav(tmp_path / "p.wav"), None, block_ms=10, on_block=on_block)
        runner = asyncio.create_task(player.run())
        rate = 8000
        player.enqueue(PlaybackItem(1, 0, np.zeros(800, np.float32), rate))  # 0.1 s
        player.enqueue(PlaybackItem(2, 0, np.zeros(8000, np.float32), rate))  # 1 s
        await player.drain(1)
        assert player.progress[(1, 0)].played == 800
        await asyncio.sleep(0.2)
        player.interrupt(2)
        await asyncio.sleep(0.05)
        played = player.progress[(2, 0)].played
        assert 0 < played < 8000  # cut within a block, not played to the end
        await asyncio.sleep(0.1)
        assert player.progress[(2, 0)].played == played
        assert player.unplayed_seconds(1) == 0
        runner.cancel()
        player.close()
        return heard

    heard = asyncio.run(scenario())
    assert heard[0][0] == 1 and {t for t, _ in heard} == {1, 2}


class RecordingModels:
    """`TritonModels.stream` for the LLM: records the inputs, answers with one delta."""

    def __init__(self) -> None:
        self.inputs: list[dict[str, object]] = []

    async def stream(self, model: str, inputs: list):
        self.inputs.append({i.name(): i for i in inputs})

        class Result:
            def as_numpy(self, name: str) -> np.ndarray:
                return np.array([[b"yes"]], dtype=object)

        yield Result()


def test_llm_stream_sends_a_grammar_only_when_given():
    models = RecordingModels()
    client = LLMClient(models)  # type: ignore[arg-type]

    async def answer(**kw) -> str:
        return "".join([d async for d in client.stream(RenderedPrompt("hi", ()), SamplingOptions(), **kw)])

    assert asyncio.run(answer()) == "yes"
    assert asyncio.run(answer(grammar='root ::= "yes" | "no"')) == "yes"
    plain, constrained = models.inputs
    assert "grammar" not in plain
    grammar = constrained["grammar"]
    assert grammar.datatype() == "BYTES" and grammar.shape() == [1, 1]
    assert grammar._get_content().endswith(b'root ::= "yes" | "no"')  # length-prefixed, as Triton serialises it
    assert set(constrained) - set(plain) == {"grammar"}
