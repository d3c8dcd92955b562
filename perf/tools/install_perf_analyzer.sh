#!/usr/bin/env bash
# Installs perf_analyzer (and, with --with-genai-perf, genai-perf) under .cache/perf-tools/ in the
# repo, never into the system. Idempotent: a second run only checks what is there.
#
#   perf/tools/install_perf_analyzer.sh                   # perf_analyzer only
#   perf/tools/install_perf_analyzer.sh --with-genai-perf # plus genai-perf in its own venv
#
# The PyPI wheel perf-analyzer 2.60.0 is tagged manylinux_2_38: its binary needs glibc 2.38 and
# GLIBCXX_3.4.32. On an older host (Debian 12 has glibc 2.36) the binary runs through a private
# copy of Debian trixie's loader and libraries, unpacked with `dpkg -x` into a folder and used
# with `ld-linux-x86-64.so.2 --library-path`. genai-perf goes into a venv of its own because it
# pulls numpy 2, which breaks the Triton Python-backend stub in the serving venv.
set -euo pipefail

PA_VERSION=2.60.0
GENAI_PERF_VERSION=0.0.16
PA_PLATFORM=manylinux_2_38_x86_64
GLIBC_SUITE=${PERF_GLIBC_SUITE:-trixie}
DEBIAN_MIRROR=${PERF_DEBIAN_MIRROR:-http://deb.debian.org/debian}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tools=${PERF_TOOLS_DIR:-$repo/.cache/perf-tools}
py=${PERF_PYTHON:-$repo/.venv/bin/python}
with_genai=0
for arg in "$@"; do
  case $arg in
    --with-genai-perf) with_genai=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done
[ -x "$py" ] || py=$(command -v python3)
[ "$(uname -m)" = x86_64 ] || { echo "this installer knows the x86_64 wheel only (on arm64 use NVIDIA's Triton SDK container)" >&2; exit 1; }
mkdir -p "$tools/wheels" "$tools/bin"

# 1. the wheel, unpacked (a wheel is a zip; pip would refuse to install it on glibc < 2.38)
pa_dir=$tools/perf_analyzer-$PA_VERSION
pa_bin=$pa_dir/perf_analyzer/bin/perf_analyzer
if [ ! -x "$pa_bin" ]; then
  wheel=$(ls "$tools"/wheels/perf_analyzer-$PA_VERSION-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$wheel" ]; then
    echo "downloading perf-analyzer $PA_VERSION ($PA_PLATFORM wheel)"
    "$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --platform "$PA_PLATFORM" --python-version 3.11 "perf-analyzer==$PA_VERSION" -d "$tools/wheels"
    wheel=$(ls "$tools"/wheels/perf_analyzer-$PA_VERSION-*.whl | head -1)
  fi
  rm -rf "$pa_dir.tmp" && mkdir -p "$pa_dir.tmp"
  "$py" -m zipfile -e "$wheel" "$pa_dir.tmp"
  chmod +x "$pa_dir.tmp/perf_analyzer/bin/perf_analyzer"
  rm -rf "$pa_dir" && mv "$pa_dir.tmp" "$pa_dir"
fi

# 2. a private newer glibc, only when the host's cannot run the binary
loader=""
if ! "$pa_bin" --version >/dev/null 2>&1; then
  glibc=$tools/glibc-$GLIBC_SUITE
  libdir=$glibc/usr/lib/x86_64-linux-gnu
  if [ ! -x "$libdir/ld-linux-x86-64.so.2" ] || [ ! -e "$libdir/libstdc++.so.6" ]; then
    command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
      || { echo "host glibc is older than 2.38 and apt-get/dpkg-deb are missing: cannot fetch a private glibc" >&2; exit 1; }
    apt_dir=$tools/apt-$GLIBC_SUITE
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_MIRROR $GLIBC_SUITE main" \
      > "$apt_dir/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
              -o Dir::State::status=/dev/null -o APT::Architecture=amd64
              -o "APT::Sandbox::User=$(id -un)" -o Debug::NoLocking=1)
    echo "fetching $GLIBC_SUITE's libc6, libstdc++6, libgcc-s1 into $glibc (private; the system is untouched)"
    apt-get -qq "${apt_opts[@]}" update
    (cd "$apt_dir/debs" && rm -f ./*.deb && apt-get -qq "${apt_opts[@]}" download libc6 libstdc++6 libgcc-s1)
    rm -rf "$glibc.tmp" && mkdir -p "$glibc.tmp"
    for deb in "$apt_dir"/debs/*.deb; do dpkg-deb -x "$deb" "$glibc.tmp"; done
    rm -rf "$glibc" && mv "$glibc.tmp" "$glibc"
    rm -rf "$apt_dir/lists" "$apt_dir/cache"  # 20 MB of indexes not needed once unpacked
  fi
  loader="$libdir/ld-linux-x86-64.so.2 --library-path $libdir"
fi

# 3. a shim on a private PATH entry: genai-perf and our wrapper both call `perf_analyzer`
shim=$tools/bin/perf_analyzer
cat > "$shim.tmp.$$" <<EOF
#!/bin/sh
# written by perf/tools/install_perf_analyzer.sh
exec $loader "$pa_bin" "\$@"
EOF
chmod +x "$shim.tmp.$$" && mv "$shim.tmp.$$" "$shim"
echo "$PA_VERSION" > "$shim.version"
"$shim" --version >/dev/null 2>&1 || { echo "perf_analyzer does not run: $shim" >&2; "$shim" --version; exit 1; }
echo "perf_analyzer $PA_VERSION: $shim"

# 4. genai-perf, in its own venv (numpy 2, pandas, plotly: kept away from the serving venv)
if [ "$with_genai" = 1 ]; then
  venv=$tools/genai-perf-venv
  if ! "$venv/bin/genai-perf" --version >/dev/null 2>&1; then
    echo "installing genai-perf $GENAI_PERF_VERSION into $venv (a few minutes)"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "genai-perf==$GENAI_PERF_VERSION"
  fi
  ln -sf "$venv/bin/genai-perf" "$tools/bin/genai-perf"
  echo "$GENAI_PERF_VERSION" > "$tools/bin/genai-perf.version"
  echo "genai-perf $GENAI_PERF_VERSION: $tools/bin/genai-perf"
fi
