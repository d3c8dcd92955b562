"""Where chat enters: console, JSONL script, Twitch IRC. Each source puts ChatEvents into a ChatSink."""
