"""The streamer's screen: a local web app beside `spark-client live`.

`/overlay` (an OBS browser source: the speaking persona's captions, in step with the audio) and
`/panel` (the control panel: who speaks, the chat queue, turn timings, connections, controls).
`hub.py` fans the stream's events out to connected pages without ever making the stream wait,
`controls.py` is what the panel may do to the stream, `server.py` the aiohttp app, `auth.py` who
may use it, `static/` the pages themselves (no CDN: everything is served from here).
"""
