"""What llama.cpp is compiled for on this machine: the x86 vector instructions its CPU has (from
/proc/cpuinfo), as llama.cpp's CMake options: AVX2, FMA and F16C as the portable x86-64-v3 build
had, and AVX-512 with VNNI, BF16 and VBMI where the CPU has them (the 135M model reads a prompt
~20% faster with them). AMX is never enabled: its build crashed in its first decode on this
project's Intel machine. Where the CPU cannot be read (not Linux, not x86) the portable options
stand, as before.

`make setup` compiles llama-cpp-python with `cmake-args`, keeps the wheel under
.cache/llama-wheels/<key>/ (pip's own cache would hand a wheel built for one CPU to the next one,
since its key ignores CMAKE_ARGS) and writes the instructions the build needs beside the
installed package (`mark`). The llm engine checks them before it loads llama.cpp
(`check_installed`), so a .venv carried to a CPU without them fails with a clear error instead of
dying of SIGILL in Triton's model stub.

Standard library only: the Makefile runs it with the system python before .venv exists.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import platform
import sys
from pathlib import Path

_AVX512 = ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")
# llama.cpp's option -> the /proc/cpuinfo flags it needs, in llama.cpp's own order (AVX-512's
# extensions only with AVX-512 itself).
X86_OPTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("GGML_SSE42", ("sse4_2",)),
    ("GGML_AVX", ("avx",)),
    ("GGML_F16C", ("f16c",)),
    ("GGML_FMA", ("fma",)),
    ("GGML_BMI2", ("bmi2",)),
    ("GGML_AVX2", ("avx2",)),
    ("GGML_AVX_VNNI", ("avx_vnni",)),
    ("GGML_AVX512", _AVX512),
    ("GGML_AVX512_VBMI", (*_AVX512, "avx512vbmi")),
    ("GGML_AVX512_VNNI", (*_AVX512, "avx512_vnni")),
    ("GGML_AVX512_BF16", (*_AVX512, "avx512_bf16")),
)
# Crashed with SIGSEGV in the first decode (a GGML_NATIVE=ON build on the Intel Xeon): always off.
NEVER = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")
# What llama.cpp turns on by itself with GGML_NATIVE off: x86-64-v3, the build before this module,
# kept where the CPU's flags cannot be read.
PORTABLE = frozenset(("GGML_SSE42", "GGML_AVX", "GGML_F16C", "GGML_FMA", "GGML_BMI2", "GGML_AVX2"))
MARKER = "spark_llama_build.json"


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str] | None:
    """The x86 CPU's instruction flags (the first `flags` line of /proc/cpuinfo), or None where
    there is none to read (another OS, another architecture)."""
    if cpuinfo is None:
        if platform.machine().lower() not in ("x86_64", "amd64"):
            return None
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def cmake_options(flags: frozenset[str] | None) -> dict[str, bool]:
    """Each x86 option of llama.cpp, on where the CPU has what it needs (the portable set where the
    flags are unknown)."""
    if flags is None:
        return {name: name in PORTABLE for name, _ in X86_OPTIONS}
    return {name: all(f in flags for f in needs) for name, needs in X86_OPTIONS}


def cmake_args(options: dict[str, bool]) -> str:
    """CMAKE_ARGS for llama-cpp-python: every option named, so none falls back to a default."""
    parts = ["-DGGML_NATIVE=OFF"]
    parts += [f"-D{name}={'ON' if on else 'OFF'}" for name, on in options.items()]
    parts += [f"-D{name}=OFF" for name in NEVER]
    return " ".join(parts)


def required_flags(options: dict[str, bool]) -> list[str]:
    """The cpuinfo flags a build with `options` executes."""
    needs = dict(X86_OPTIONS)
    return sorted({flag for name, on in options.items() if on and name in needs for flag in needs[name]})


def level(options: dict[str, bool]) -> str:
    """A short name for the build's instruction level (part of the wheel folder's name)."""
    if options.get("GGML_AVX512"):
        return "x86-64-avx512" + ("-vnni" if options.get("GGML_AVX512_VNNI") else "")
    if options.get("GGML_AVX2") and options.get("GGML_FMA"):
        return "x86-64-v3"
    return "x86-64"


def build_key(args: str, requirements: str) -> str:
    """The wheel folder's name: the instruction level and a digest of the CMake arguments and the
    pinned requirement (a new pin or new arguments build a new wheel)."""
    digest = hashlib.sha256(f"{args}\n{requirements}".encode()).hexdigest()[:10]
    return f"{level(_parse_args(args))}-{digest}"


def _parse_args(args: str) -> dict[str, bool]:
    """The x86 options a CMAKE_ARGS string builds with, llama.cpp's defaults filled in: with
    GGML_NATIVE on (its default) the build takes every instruction this CPU has."""
    named = {}
    for part in args.split():
        name, _, value = part.removeprefix("-D").partition("=")
        named[name] = value.upper() in ("ON", "1", "TRUE", "YES", "Y")
    if named.get("GGML_NATIVE", True):
        return cmake_options(cpu_flags())
    return {name: named.get(name, name in PORTABLE) for name, _ in X86_OPTIONS}


def installed_marker() -> Path | None:
    """Where the marker of the installed llama-cpp-python lives (beside its package), without
    importing it (importing loads llama.cpp, which a build for another CPU cannot survive)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).parent / MARKER


def mark(args: str) -> Path:
    """Records beside the installed package the CPU flags its build executes."""
    path = installed_marker()
    if path is None:
        raise SystemExit("llama-cpp-python is not installed in this environment")
    options = _parse_args(args)
    path.write_text(json.dumps({"cmake_args": args, "cpu_flags": required_flags(options)}) + "\n", encoding="utf-8")
    return path


def missing_flags(marker: dict, flags: frozenset[str] | None) -> list[str]:
    """The instructions the installed build executes that this CPU lacks (none when the CPU's
    flags cannot be read: nothing to compare with)."""
    if flags is None:
        return []
    return [f for f in marker.get("cpu_flags", []) if f not in flags]


def check_installed() -> None:
    """Raises RuntimeError, saying what to run, when the installed llama.cpp was compiled for
    instructions this CPU lacks. Silent without a marker (a build this project did not make)."""
    path = installed_marker()
    if path is None or not path.is_file():
        return
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    missing = missing_flags(marker, cpu_flags())
    if missing:
        raise RuntimeError(
            "llama.cpp in this environment was compiled for another CPU (this one lacks "
            f"{', '.join(missing)}): run `make setup` to compile it for this one"
        )


def main(argv: list[str]) -> int:
    """`cmake-args`: the arguments for this CPU; `key REQUIREMENTS_FILE [ARGS]`: the wheel folder's
    name; `mark ARGS`: writes the marker beside the installed package."""
    command = argv[0] if argv else "cmake-args"
    if command == "cmake-args":
        print(cmake_args(cmake_options(cpu_flags())))
    elif command == "key" and len(argv) >= 2:
        args = " ".join(argv[2:]) or cmake_args(cmake_options(cpu_flags()))
        print(build_key(args, Path(argv[1]).read_text(encoding="utf-8")))
    elif command == "mark" and len(argv) >= 2:
        print(f"llama.cpp build recorded in {mark(' '.join(argv[1:]))}")
    else:
        print(main.__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
