"""Speech out: LLM stream, chunker, TTS stream, playback."""
