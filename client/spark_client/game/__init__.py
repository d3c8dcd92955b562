"""Game mode: the personas play Minecraft (or watch someone play) through a mineflayer sidecar.

protocol.py  the sidecar's JSON lines, without I/O     sidecar.py  the supervised sidecar process
skills.py    the callable skills: grammar, parse, checks  observe.py  the world in a few lines
goals.py     goals, chat's votes and the streamer's approvals  player.py  one LLM-chosen call per step
The narration of what happens is a chat source: sources/game.py."""
