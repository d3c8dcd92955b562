"""The microphone: capture (a device or fed WAV files) -> echo suppression -> voice activity
detection -> utterances -> speech to text -> the turn loop, as the named speaker's words.

`frames.py` is the shared unit (16 kHz mono float32 frames of 32 ms); `capture.py` and `feed.py`
produce frames, `echo.py` removes the personas' own playback from them, `vad.py` and
`segmenter.py` cut utterances, and `listener.py` ties them to the STT model and the turn loop.
"""
