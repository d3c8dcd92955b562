"""What a person speaking does to the stream: barge-in, backchannels, and spoken turns.

The moment the VAD hears speech while a persona talks (or is about to: its answer is being
generated), playback pauses (within two 20 ms blocks) and everything already generated stays
queued. The transcript then decides:
- no words (a cough, a laugh, noise the VAD took for speech), a backchannel ("yeah", "mm-hm"),
  or the persona's own voice coming back through the speakers: playback resumes from where it
  stopped, and no turn starts;
- words: the persona was cut off. Its turn is cancelled (LLM and TTS streams on the server),
  history keeps only what was heard, and the person's words are answered next, marked as cutting
  in so the persona knows.
The server's streams therefore run on while the words are still being spoken (synthesis is held
by playback's backpressure, so little is wasted) and are cancelled once the transcript proves
the interruption real: that is what lets a false alarm resume where it stopped.

Words spoken while no persona talks are answered first (HIGH priority), as the speaker's own
words to the personas. Every utterance leaves a `voice` record in the metrics file.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from spark_client.events import VOICE_SOURCE, ChatMessage, Priority
from spark_client.sources.mic.listener import SpeechOnset, Utterance
from spark_client.speech.guards import words
from spark_client.speech.playback import Player
from spark_client.turns.queue import ChatQueue

log = logging.getLogger(__name__)

# Short replies that keep a speaker going rather than take the turn ("mm-hm" and "uh-huh" are
# compared word by word).
BACKCHANNELS = frozenset(
    "yeah yea yes yep yup mm mmm mhm hmm hm uh huh um ah oh ok okay right sure "
    "true nice cool wow really totally exactly ha haha hah lol alright gotcha indeed".split()
)
# What Whisper is known to write for a breath or noise in a short clip; taken as no words.
NOISE_TRANSCRIPTS = frozenset({"you", "thank you", "thanks", "thanks for watching", "bye", "so", "the"})


class Outcome:
    NO_WORDS = "no_words"  # noise, a cough, silence
    ECHO = "echo"  # the personas' own voice through the speakers
    BACKCHANNEL = "backchannel"  # "yeah", "mm-hm" while a persona talks
    TURN = "turn"  # words for the personas


def classify(
    text: str,
    *,
    speech_ms: float,
    persona_speaking: bool,
    persona_said: str,
    backchannel_ms: float = 600.0,
    echo_overlap: float = 0.6,
    echo_likeness: float = 0.0,
    echo_likeness_cleaned: float = 0.0,
    echo_sound: float = 0.8,
    echo_sound_cleaned: float = 0.2,
) -> str:
    """What an utterance is (see `Outcome`). A backchannel only exists while a persona talks
    and is short; otherwise "yeah" is an answer like any other.

    The personas' own voice coming back is known by its sound or by its words. By its sound:
    what the microphone heard follows what played (`echo_likeness` at least `echo_sound`) and
    the echo canceller's output still does (`echo_likeness_cleaned` at least
    `echo_sound_cleaned`: a canceller that has not converged, or has only half). The streamer
    talking over a loud echo also makes the first high, but not the second: what the canceller
    leaves of that is the streamer. By its words: mostly words the personas just said (speech
    to text often mishears an echo, so not only that)."""
    heard = words(text)
    if not heard or (speech_ms < 1000 and " ".join(heard) in NOISE_TRANSCRIPTS):
        return Outcome.NO_WORDS
    if echo_likeness >= echo_sound and echo_likeness_cleaned >= echo_sound_cleaned:
        return Outcome.ECHO
    said = set(words(persona_said))
    if said and sum(w in said for w in heard) / len(heard) >= echo_overlap:
        return Outcome.ECHO
    short = speech_ms < backchannel_ms or len(heard) <= 2
    if persona_speaking and short and all(w in BACKCHANNELS for w in heard):
        return Outcome.BACKCHANNEL
    return Outcome.TURN


class LoopView(Protocol):
    """What the voice needs from the turn loop."""

    @property
    def current_turn(self) -> int | None: ...

    def recent_speech(self, since: float) -> str: ...


@dataclass(frozen=True)
class VoiceOptions:
    speaker: str = "streamer"  # whose words the microphone carries (--mic-speaker)
    barge_in: bool = True  # speech over a persona pauses it (off: it only queues an answer)
    backchannel_ms: float = 600.0
    echo_window_s: float = 15.0  # the personas' words this recent are compared with a transcript
    # An utterance whose echo likeness (sources/mic/echo.py) reaches these, as heard and after the
    # echo canceller, is the personas' voice (see `classify`).
    echo_sound: float = 0.8
    echo_sound_cleaned: float = 0.2
    max_hold_s: float = 30.0  # a pause longer than this resumes whatever happened (a lost transcript)


class VoiceTurns:
    """The `VoiceSink` of the microphone path (sources/mic/listener.py)."""

    def __init__(
        self,
        *,
        queue: ChatQueue,
        player: Player,
        loop: LoopView,
        options: VoiceOptions = VoiceOptions(),
        record: Callable[[dict[str, Any]], None] | None = None,
        printer: Callable[[str], None] | None = None,
    ) -> None:
        self.queue, self.player, self.loop, self.options = queue, player, loop, options
        self._record = record
        self._print = printer
        self._held: SpeechOnset | None = None  # the onset that paused a persona, until the transcript
        self._held_turn: int | None = None
        self._onset: SpeechOnset | None = None
        self._ended_at: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self.counts: dict[str, int] = {}

    # --- VoiceSink ------------------------------------------------------------------------------
    def speech_started(self, onset: SpeechOnset) -> None:
        self._onset, self._ended_at = onset, None
        busy = self.player.speaking() or self.loop.current_turn is not None  # talking, or about to
        if self.options.barge_in and self._held is None and busy and not self.player.paused:
            self.player.pause()
            self._held, self._held_turn = onset, self.loop.current_turn
            self._watchdog = asyncio.get_running_loop().call_later(self.options.max_hold_s, self._release)

    def speech_discarded(self) -> None:
        self._count("discarded")
        self._note({"outcome": "discarded", **self._hold_fields()})
        self._release()

    def speech_ended(self, end_at: float) -> None:
        self._ended_at = end_at

    async def heard(self, utterance: Utterance) -> None:
        held = self._held
        speaking = held is not None or self.player.speaking()
        said = self.loop.recent_speech(utterance.start_at - self.options.echo_window_s)
        outcome = classify(
            utterance.text,
            speech_ms=utterance.speech_ms,
            persona_speaking=speaking,
            persona_said=said,
            backchannel_ms=self.options.backchannel_ms,
            echo_likeness=utterance.echo_likeness,
            echo_likeness_cleaned=utterance.echo_likeness_cleaned,
            echo_sound=self.options.echo_sound,
            echo_sound_cleaned=self.options.echo_sound_cleaned,
        )
        self._count(outcome)
        record: dict[str, Any] = {
            "outcome": outcome,
            "text": utterance.text,
            "start_at": round(utterance.start_at, 4),
            "end_at": round(utterance.end_at, 4),
            "speech_ms": round(utterance.speech_ms, 1),
            "stt_ms": round(utterance.stt_ms, 1),
            "transcript_ms": round((utterance.transcribed_at - utterance.end_at) * 1000, 1),
            "echo_likeness": round(utterance.echo_likeness, 3),
            "echo_likeness_cleaned": round(utterance.echo_likeness_cleaned, 3),
            "cut_in": False,
        }
        record.update(self._hold_fields())
        if outcome != Outcome.TURN:
            if outcome == Outcome.ECHO:
                log.info(
                    "ignored the personas' own voice from the microphone: %r (echo likeness %.2f)",
                    utterance.text,
                    utterance.echo_likeness,
                )
            self._note(record)
            self._release()
            return
        cut_in = held is not None
        if cut_in and self._held_turn is not None:
            # What was not heard is dropped now; the turn itself (its server streams) is cancelled by
            # the INTERRUPT below, as a viewer's !stop would.
            self.player.interrupt(self._held_turn)
        record["cut_in"] = cut_in
        self._note(record)
        self._release()
        if self._print is not None:
            self._print(f"{self.options.speaker} (mic): {utterance.text}")
        self.queue.offer(
            ChatMessage(
                VOICE_SOURCE,
                self.options.speaker,
                utterance.text,
                badges=frozenset({"broadcaster"}) if self.options.speaker == VoiceOptions.speaker else frozenset(),
                priority=Priority.INTERRUPT if cut_in else Priority.HIGH,
                received_at=utterance.end_at,  # the reply's latency counts from the end of speech
                cut_in=cut_in,
            )
        )

    # --- helpers --------------------------------------------------------------------------------
    def _hold_fields(self) -> dict[str, Any]:
        """When the speech paused a persona: when the VAD was sure, when the pause was asked and
        when the sound stopped (monotonic seconds)."""
        if self._held is None:
            return {}

        def at(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "onset_detected_at": at(self._held.detected_at),
            "paused_at": at(self.player.paused_at),
            "stopped_at": at(self.player.stopped_at),
        }

    def _release(self) -> None:
        """Ends a hold: the player plays on (the cut turn's audio, if any, is already dropped)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._held is not None:
            self._held = self._held_turn = None
            self.player.resume()

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def _note(self, record: dict[str, Any]) -> None:
        if self._record is None:
            return
        try:
            self._record(
                {"event": "voice", "speaker": self.options.speaker, "at": round(time.monotonic(), 4), **record}
            )
        except Exception:  # metrics are an extra
            log.exception("could not record an utterance")
