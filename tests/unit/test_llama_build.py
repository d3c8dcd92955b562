"""llama.cpp compiled for this CPU: which CMake options a CPU's flags give, the wheel folder's key,
the marker the llm engine checks before it loads llama.cpp, and the Makefile's use of them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spark_runtime import llama_build
from spark_runtime.engines.llama_cpp import LlamaCppEngine
from spark_runtime.errors import EngineMissingError
from spark_runtime.paths import REPO_ROOT
from tests.timing import seconds

# First "flags" lines of /proc/cpuinfo, shortened to what matters here.
SAPPHIRE_RAPIDS = (
    "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma bmi2 avx2 avx_vnni avx512f avx512dq avx512cd avx512bw "
    "avx512vl avx512vbmi avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"
)
ZEN3 = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma bmi2 avx2 sha_ni"
SKYLAKE_X = "sse4_2 avx f16c fma bmi2 avx2 avx512f avx512dq avx512cd avx512bw avx512vl"
OLD = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx"


def cpuinfo(flags: str, cpus: int = 2) -> str:
    block = f"processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n"
    return block * cpus


def options_for(flags: str) -> dict[str, bool]:
    return llama_build.cmake_options(llama_build.cpu_flags(cpuinfo(flags)))


def test_an_avx512_cpu_gets_avx512_and_its_extensions_but_never_amx():
    options = options_for(SAPPHIRE_RAPIDS)
    assert options["GGML_AVX2"] and options["GGML_AVX512"]
    assert options["GGML_AVX512_VNNI"] and options["GGML_AVX512_BF16"] and options["GGML_AVX512_VBMI"]
    args = llama_build.cmake_args(options)
    assert "-DGGML_NATIVE=OFF" in args and "-DGGML_AVX512=ON" in args
    assert all(f"-D{name}=OFF" in args for name in llama_build.NEVER)
    assert llama_build.level(options) == "x86-64-avx512-vnni"


def test_a_cpu_without_avx512_keeps_the_portable_build():
    options = options_for(ZEN3)
    assert options["GGML_AVX2"] and options["GGML_FMA"] and options["GGML_F16C"]
    assert not any(options[name] for name in ("GGML_AVX512", "GGML_AVX512_VNNI", "GGML_AVX_VNNI"))
    assert "-DGGML_AVX512=OFF" in llama_build.cmake_args(options)  # named: llama.cpp's default never decides
    assert llama_build.level(options) == "x86-64-v3"


def test_avx512_extensions_need_avx512_itself():
    options = options_for(SKYLAKE_X)
    assert options["GGML_AVX512"] and not options["GGML_AVX512_VNNI"]
    assert llama_build.level(options) == "x86-64-avx512"
    # VNNI reported without all of AVX-512 (avx512bw missing): neither is built
    partial = options_for(SAPPHIRE_RAPIDS.replace("avx512bw ", ""))
    assert not partial["GGML_AVX512"] and not partial["GGML_AVX512_VNNI"]


def test_a_cpu_without_avx2_gets_a_build_it_can_run():
    options = options_for(OLD)
    assert options["GGML_AVX"] and not options["GGML_AVX2"] and not options["GGML_FMA"]
    assert set(llama_build.required_flags(options)) <= set(OLD.split())
    assert llama_build.level(options) == "x86-64"


def test_unknown_flags_keep_the_portable_options():
    assert llama_build.cpu_flags("processor : 0\nFeatures : fp asimd\n") is None
    options = llama_build.cmake_options(None)
    assert options["GGML_AVX2"] and not options["GGML_AVX512"]


def test_the_wheel_key_changes_with_the_arguments_and_the_pin():
    portable = llama_build.cmake_args(options_for(ZEN3))
    wide = llama_build.cmake_args(options_for(SAPPHIRE_RAPIDS))
    pin = "llama-cpp-python[server]==0.3.36\n"
    assert llama_build.build_key(portable, pin) == llama_build.build_key(portable, pin)
    assert llama_build.build_key(portable, pin).startswith("x86-64-v3-")
    assert llama_build.build_key(wide, pin).startswith("x86-64-avx512-vnni-")
    assert llama_build.build_key(portable, pin) != llama_build.build_key(portable, pin.replace("36", "37"))


def test_what_a_build_needs_follows_llama_cpps_defaults():
    # the build before this module named three options; llama.cpp turned the rest of x86-64-v3 on
    old = llama_build._parse_args("-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON")
    assert llama_build.required_flags(old) == ["avx", "avx2", "bmi2", "f16c", "fma", "sse4_2"]
    assert "avx512f" not in llama_build.required_flags(old)
    assert llama_build.required_flags(llama_build._parse_args("-DGGML_NATIVE=OFF -DGGML_AVX2=OFF -DGGML_AVX=OFF")) == [
        "bmi2",
        "f16c",
        "fma",
        "sse4_2",
    ]


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in llama_cpp package on sys.path (never imported: the check must not import it)."""
    package = tmp_path / "site" / "llama_cpp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise SystemExit('llama_cpp was imported')\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "llama_cpp", raising=False)
    return tmp_path / "site" / llama_build.MARKER


def test_a_build_for_instructions_this_cpu_lacks_is_refused_before_llama_cpp_loads(installed, monkeypatch):
    wide = llama_build.cmake_args(options_for(SAPPHIRE_RAPIDS))
    assert llama_build.mark(wide) == installed
    assert "avx512f" in json.loads(installed.read_text())["cpu_flags"]

    monkeypatch.setattr(llama_build, "cpu_flags", lambda cpuinfo=None: frozenset(ZEN3.split()))
    with pytest.raises(RuntimeError, match=r"another CPU.*avx512.*make setup"):
        llama_build.check_installed()
    # the llm engine says the same, as a missing engine, before it touches llama.cpp
    model = installed.parent / "model.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(EngineMissingError, match="make setup"):
        LlamaCppEngine(model)

    monkeypatch.setattr(llama_build, "cpu_flags", lambda cpuinfo=None: frozenset(SAPPHIRE_RAPIDS.split()))
    llama_build.check_installed()  # the CPU it was built for


def test_no_marker_or_unknown_flags_are_not_refused(installed, monkeypatch):
    llama_build.check_installed()  # a llama.cpp this project did not build: nothing to compare
    llama_build.mark(llama_build.cmake_args(options_for(SAPPHIRE_RAPIDS)))
    monkeypatch.setattr(llama_build, "cpu_flags", lambda cpuinfo=None: None)
    llama_build.check_installed()


def test_this_environments_llama_cpp_runs_on_this_cpu():
    llama_build.check_installed()


def _make_dry_run(*args: str) -> str:
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-C", str(REPO_ROOT), *args],
        capture_output=True,
        text=True,
        timeout=seconds(60),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_setup_compiles_llama_cpp_again_for_another_instruction_set():
    # a CPU build this .venv has not seen (here: given on the command line): a wheel of its own,
    # compiled without pip's cache, installed without its dependencies' pins moving, then marked
    args = "-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF"
    key = llama_build.build_key(args, (REPO_ROOT / "requirements/llama.txt").read_text(encoding="utf-8"))
    plan = _make_dry_run("setup", f"LLAMA_CMAKE_ARGS={args}")
    assert f".cache/llama-wheels/{key}" in plan
    assert "--no-cache-dir" in plan and "--no-binary llama-cpp-python" in plan
    assert "--force-reinstall --no-deps" in plan
    assert f"llama_build.py mark {args}" in plan
    assert f".venv/.llama-{key}" in plan
