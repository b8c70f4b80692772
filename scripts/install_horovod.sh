#!/usr/bin/env bash
# Install Horovod 0.28.1 (its last release) into a venv, built against the installed torch.
#
# 0.28.1 does not compile against torch >= 2.1, whose headers need C++17; its CMake files ask for C++14. We build
# the PyPI sdist with that one setting changed (both CMakeLists.txt files) and cache the wheel per torch version and
# variant, so the ~5 minute build happens once per machine. `make setup-horovod` runs this (WITH_HOROVOD=0 skips it).
#
# Controllers: always Gloo (`horovodrun --gloo`); MPI too when Open MPI and its headers are installed (Debian:
# openmpi-bin libopenmpi-dev, which `make setup-system` installs) - then `horovodrun` without --gloo and a plain
# Open MPI `mpirun` start Horovod as well, which is what the MPI operator's launcher does. The build uses Open MPI's
# own compiler wrapper (/usr/bin/mpicxx.openmpi), never the MPICH one that the `mpich` wheel puts into the venv.
#
#   PY=.venv/bin/python scripts/install_horovod.sh            # Gloo, and MPI where Open MPI is installed
#   HOROVOD_WITHOUT_MPI=1 scripts/install_horovod.sh          # Gloo only, even where Open MPI is installed
#   HOROVOD_WITHOUT_MPI=0 scripts/install_horovod.sh          # MPI required: fails where Open MPI is missing
#   HOROVOD_GPU_OPERATIONS=NCCL scripts/install_horovod.sh    # GPU images (see docker/Dockerfile)
set -euo pipefail

PY=${PY:-.venv/bin/python}
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # absolute: the build cds
VERSION=0.28.1
CACHE_ROOT=${HOROVOD_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlflow-anf/wheels}

# Open MPI's C++ wrapper: Debian names it mpicxx.openmpi (mpicxx is an alternative that may point elsewhere).
OMPI_CXX_WRAPPER=${OMPI_CXX_WRAPPER:-$(command -v mpicxx.openmpi || true)}
case "${HOROVOD_WITHOUT_MPI:-auto}" in
    auto) if [ -n "$OMPI_CXX_WRAPPER" ]; then with_mpi=1; else with_mpi=0; fi ;;
    0) with_mpi=1
       [ -n "$OMPI_CXX_WRAPPER" ] || {
           echo "install_horovod.sh: HOROVOD_WITHOUT_MPI=0 needs Open MPI and its headers (mpicxx.openmpi not found;" \
                "Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev, or: sudo make setup-system)" >&2
           exit 1
       } ;;
    *) with_mpi=0 ;;
esac

installed_ok() {  # horovod is importable and has the controllers this build would have
    "$PY" - "$with_mpi" <<'PYEOF' 2>/dev/null
import sys
import horovod.torch as hvd
sys.exit(0 if hvd.gloo_built() and (sys.argv[1] != "1" or hvd.mpi_built()) else 1)
PYEOF
}
if installed_ok; then
    echo "horovod already installed: $("$PY" -c 'import horovod; print(horovod.__version__)')"
    exit 0
fi

torch_tag=$("$PY" -c "import sys, torch; print(f'py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__}')")
variant="${HOROVOD_GPU_OPERATIONS:+-${HOROVOD_GPU_OPERATIONS,,}}"
[ "$with_mpi" = 1 ] && variant="$variant-mpi"
cache="$CACHE_ROOT/horovod-$VERSION-$torch_tag$variant"
mkdir -p "$cache"

# Horovod's runtime dependencies (the wheel is installed with --no-deps).
"$PY" -m pip install -q cloudpickle psutil pyyaml packaging cffi

wheel=$(ls "$cache"/horovod-"$VERSION"-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
    command -v "${CXX:-c++}" >/dev/null || {
        echo "install_horovod.sh: building horovod needs a C++17 compiler (${CXX:-c++} not found; e.g. apt-get install g++)," \
             "or skip it with WITH_HOROVOD=0 (strategy=ddp works without horovod)" >&2
        exit 1
    }
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "building horovod $VERSION for $torch_tag (once; cached in $cache) ..."
    "$PY" -m pip download -q --no-deps --no-binary :all: "horovod==$VERSION" -d "$work"
    tar -xzf "$work"/horovod-"$VERSION".tar.gz -C "$work"
    src="$work/horovod-$VERSION"
    for f in "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"; do
        grep -q 'set(CMAKE_CXX_STANDARD 14)' "$f" || { echo "unexpected $f: no C++14 line to patch" >&2; exit 1; }
        sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$f"
    done
    "$PY" -m pip install -q setuptools wheel cmake
    if [ "$with_mpi" = 1 ]; then
        # CMake's FindMPI and Horovod's setup.py take the wrapper from MPI_CXX_COMPILER / the first mpicxx on PATH
        mpi_env=(HOROVOD_WITH_MPI=1 "MPI_CXX_COMPILER=$OMPI_CXX_WRAPPER" "MPICXX=$OMPI_CXX_WRAPPER"
                 "PATH=$(dirname "$OMPI_CXX_WRAPPER"):$PATH")
    else
        mpi_env=(HOROVOD_WITHOUT_MPI=1)
    fi
    (
        cd "$src"
        env "${mpi_env[@]}" HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 \
        HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS="-j$(nproc)" \
            "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$work/dist" .
    )
    name=$(basename "$work"/dist/horovod-*.whl)
    cp "$work/dist/$name" "$cache/.tmp-$name" && mv "$cache/.tmp-$name" "$cache/$name"  # never a half wheel
    wheel="$cache/$name"
fi
"$PY" -m pip install -q --no-deps --force-reinstall "$wheel"
"$PY" -c "import horovod.torch as hvd; print('horovod', __import__('horovod').__version__, 'gloo built:', hvd.gloo_built(), 'mpi built:', hvd.mpi_built())"
installed_ok || { echo "install_horovod.sh: the installed horovod lacks a controller it was built with (MPI: $with_mpi)" >&2; exit 1; }
