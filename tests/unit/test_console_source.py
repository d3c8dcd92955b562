"""The console source: lines from a real pipe, and a pending read never holds up the exit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest
from spark_client.events import ChatEvent, Priority
from spark_client.sources.console import ConsoleSource, FdLineReader

from tests.timing import seconds


class Sink:
    def __init__(self) -> None:
        self.events: list[ChatEvent] = []

    def offer(self, event: ChatEvent) -> bool:
        self.events.append(event)
        return True


@pytest.fixture
def pipe():
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        try:
            os.close(fd)
        except OSError:
            pass


def test_lines_from_a_pipe_become_chat_until_end_of_input(pipe) -> None:
    read_fd, write_fd = pipe
    sink = Sink()

    async def main() -> None:
        task = asyncio.create_task(ConsoleSource(fd=read_fd).run(sink))
        # a character split across two writes, a blank line, a streamer command, no final newline
        for chunk in (b"hello there\n\n", "caf\u00e9".encode()[:-1], "caf\u00e9".encode()[-1:] + b"!\n", b"!stop\nbye"):
            os.write(write_fd, chunk)
            await asyncio.sleep(0.02)
        os.close(write_fd)
        await asyncio.wait_for(task, seconds(5))

    asyncio.run(main())
    assert [(e.user, e.text) for e in sink.events] == [
        ("viewer", "hello there"),
        ("viewer", "café!"),
        ("streamer", ""),
        ("viewer", "bye"),
    ]
    assert sink.events[2].priority is Priority.INTERRUPT
    assert [e.message_id for e in sink.events] == ["console-1", "console-3", "console-4", "console-5"]


def test_cancelling_a_pending_read_returns_at_once(pipe) -> None:
    read_fd, _ = pipe  # the writer stays open: the read never completes

    async def main() -> float:
        reader = FdLineReader(read_fd)
        task = asyncio.create_task(anext(reader.lines()))
        await asyncio.sleep(0.1)
        started = asyncio.get_running_loop().time()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return asyncio.get_running_loop().time() - started

    assert asyncio.run(main()) < seconds(1)


# A process reading its real stdin, which is a pipe its parent keeps open (a terminal nobody types
# into): once the source is cancelled, asyncio.run and the interpreter exit without waiting for input.
CHILD = textwrap.dedent(
    """
    import asyncio
    from spark_client.sources.console import ConsoleSource

    class Sink:
        def __init__(self):
            self.events = []

        def offer(self, event):
            self.events.append(event)
            return True

    async def main():
        sink = Sink()
        task = asyncio.create_task(ConsoleSource().run(sink))
        while not sink.events:
            await asyncio.sleep(0.01)
        print("read:", sink.events[0].text, flush=True)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    print("asyncio.run returned", flush=True)
    """
)


def wait_exit(process: subprocess.Popen[str], timeout: float) -> bool:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_a_process_whose_stdin_stays_open_exits_once_the_source_is_cancelled() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdin is not None
        child.stdin.write("hello\n")
        child.stdin.flush()  # and stdin stays open (communicate() would close it)
        exited = wait_exit(child, seconds(20))
        if not exited:
            child.kill()
        out, err = child.communicate()
    finally:
        if child.poll() is None:
            child.kill()
    assert exited, f"the process did not exit while its stdin stayed open\n{out}\n{err}"
    assert child.returncode == 0, err
    assert out.splitlines() == ["read: hello", "asyncio.run returned"]
    assert "Fatal Python error" not in err and not err.strip(), err
