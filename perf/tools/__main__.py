"""python -m perf.tools [--install] {perf_analyzer,genai-perf} ARGS...

Runs the tool installed by perf/tools/install_perf_analyzer.sh (through the private glibc loader
where the host needs it), passing ARGS through. `--install` runs the installer first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from perf.tools import find_tool, install

TOOLS = ("perf_analyzer", "genai-perf")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    do_install = bool(args) and args[0] == "--install"
    if do_install:
        args = args[1:]
    if not args or args[0] not in TOOLS:
        print(__doc__, file=sys.stderr)
        return 2
    name, rest = args[0], args[1:]
    if do_install:
        ok, tail = install(with_genai_perf=name == "genai-perf")
        if not ok:
            print(tail, file=sys.stderr)
            return 1
    tool = find_tool(name)
    if tool is None:
        flag = " --with-genai-perf" if name == "genai-perf" else ""
        print(f"{name} is not installed: run perf/tools/install_perf_analyzer.sh{flag}", file=sys.stderr)
        return 1
    os.environ.update(tool.environment())
    return subprocess.call([str(tool.path), *rest])


if __name__ == "__main__":
    sys.exit(main())
