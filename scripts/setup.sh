#!/usr/bin/env bash
# Installs what building tram needs, idempotently and quietly when done:
#   - Debian packages: a C++ toolchain, CMake, GoogleTest, nlohmann-json,
#     SentencePiece (the XLM-R tokenizer of tram::hf), Gloo headers (the
#     data-parallel backend compiled into LibTorch), zlib; and the study's data
#     (Fashion-MNIST, the fortunes corpora in twelve languages) and gnuplot.
#   - LibTorch: the torch 2.11.0 wheel from PyPI in a project-local venv (.venv),
#     unless a python3 that already imports torch 2.x is present (the GPU
#     machines have one, with CUDA, and no network): then that torch is used.
# Writes build/torch-prefix.txt (the CMAKE_PREFIX_PATH entry for LibTorch) and
# build/python.txt (the Python interpreter that has that torch).
#
# The CUDA runtime libraries torch links against (cudart, cuBLAS, cuDNN, NCCL,
# ...) are taken from the system CUDA toolkit in /usr/local/cuda when present;
# only the three that toolkit lacks come from PyPI. That spares ~3 GB of
# nvidia-* wheels. Set TRAM_FULL_TORCH_DEPS=1 to install torch with all its
# declared dependencies instead (a machine without the CUDA toolkit).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TORCH_VERSION=2.11.0
VENV="$ROOT/.venv"
STAMP="$VENV/.tram-setup-$TORCH_VERSION"
BUILD="${TRAM_BUILD_DIR:-$ROOT/build}"
mkdir -p "$BUILD"

log() { echo "setup: $*" >&2; }

# --- Debian packages ---------------------------------------------------------
need_pkgs=()
# The study's data and plots: Fashion-MNIST, the fortune corpora (English
# domains and eleven languages), gnuplot.
study_pkgs=(dataset-fashion-mnist fortunes fortunes-de fortunes-es fortunes-it fortunes-br fortunes-ru fortunes-pl
            fortunes-cs fortunes-bg fortunes-zh fortunes-eo fortunes-ga gnuplot-nox)
for pkg in g++ cmake make pkg-config libgtest-dev nlohmann-json3-dev libsentencepiece-dev libgloo-dev zlib1g-dev python3-venv \
           "${study_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$pkg")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  log "installing Debian packages: ${need_pkgs[*]}"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null 2>&1 \
    || { log "apt-get install ${need_pkgs[*]} failed"; exit 1; }
fi

# --- LibTorch ----------------------------------------------------------------
torch_prefix_of() { "$1" -c 'import torch, sys; assert torch.__version__.startswith("2."), torch.__version__; print(torch.utils.cmake_prefix_path)' 2>/dev/null; }

prefix=""
python=""
if [ -z "${TRAM_FORCE_VENV:-}" ] && [ ! -f "$STAMP" ] && prefix=$(torch_prefix_of python3); then
  python=$(command -v python3)
  log "using the torch of $python: $prefix"
elif [ -f "$STAMP" ] && prefix=$(torch_prefix_of "$VENV/bin/python"); then
  python="$VENV/bin/python"  # already set up: stay quiet
else
  log "installing torch $TORCH_VERSION into $VENV (one-time, about 0.8 GB download)"
  python3 -m venv "$VENV"
  pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input)
  if [ -n "${TRAM_FULL_TORCH_DEPS:-}" ] || [ ! -e /usr/local/cuda/lib64/libcudart.so.13 ]; then
    "${pip[@]}" "torch==$TORCH_VERSION"
  else
    # torch's pure-python deps (so `import torch` works for the tools and the
    # Python baselines), plus the CUDA libraries the system toolkit lacks.
    "${pip[@]}" filelock "typing-extensions>=4.10" "sympy>=1.13.3" "networkx>=2.5.1" jinja2 "fsspec>=0.8.5" numpy
    "${pip[@]}" --no-deps "torch==$TORCH_VERSION" "nvidia-cusparselt-cu13==0.8.0" \
      "nvidia-nvshmem-cu13==3.4.5" "nvidia-cufile==1.15.1.6.*"
  fi
  prefix=$(torch_prefix_of "$VENV/bin/python") || { log "torch was installed but does not import"; exit 1; }
  python="$VENV/bin/python"
  touch "$STAMP"
fi
echo "$prefix" > "$BUILD/torch-prefix.txt"
# The interpreter whose torch tram builds against: the Python reference
# implementations in tests/ run with it.
echo "$python" > "$BUILD/python.txt"
