"""Written text -> speakable text, inside the `tts` model: `speech.SpeechNormaliser` runs the chat
pre-pass (`chat.py`, its word tables in `chat_words.py`) and then NeMo's WFST grammars (`wfst.py`,
compiled at `make engines`) on the pieces that need them."""
