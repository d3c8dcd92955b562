"""The VTube Studio plugin token on disk: readable by the user only, replaced atomically.

The token lets anything holding it drive the avatar, so it is a secret: never logged, never
in exception messages, file mode 0600 in a 0700 directory.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from .protocol import is_valid_token

log = logging.getLogger(__name__)

TOKEN_FILE_MODE = 0o600
TOKEN_DIR_MODE = 0o700


def default_token_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "spark-vtuber" / "vts_token"


class TokenStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> str | None:
        """The stored token, or None if there is none or it is unusable."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read VTube Studio token file %s: %s", self.path, exc.strerror)
            return None
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            if mode & 0o077:
                log.warning(
                    "VTube Studio token file %s was readable by others (mode %o); restricting it to 0600",
                    self.path,
                    mode,
                )
                os.fchmod(fd, TOKEN_FILE_MODE)
            raw = os.read(fd, 4096)
        finally:
            os.close(fd)
        try:
            token = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            token = ""
        if not is_valid_token(token):
            log.warning("VTube Studio token file %s is malformed; a new token is needed", self.path)
            return None
        return token

    def save(self, token: str) -> None:
        """Write the token to a fresh 0600 file beside the target, then rename over it."""
        if not is_valid_token(token):
            raise ValueError("refusing to store a malformed token")
        directory = self.path.parent
        directory.mkdir(mode=TOKEN_DIR_MODE, parents=True, exist_ok=True)
        tmp = directory / f".{self.path.name}.{os.getpid()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            tmp.unlink()  # left over from a crash of this same pid number
        except FileNotFoundError:
            pass
        fd = os.open(tmp, flags, TOKEN_FILE_MODE)
        try:
            try:
                os.fchmod(fd, TOKEN_FILE_MODE)  # the umask may only have narrowed it; be exact
                os.write(fd, token.encode("ascii") + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        try:
            dfd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
