#!/usr/bin/env bash
# The GPU check of ftm in one command: on a lent GPU machine with no network, it sets up Python
# from what was carried beside the working tree, says which torch and CUDA it found, then runs
# benchmarks/gpu.py, which prints one table. On a machine without a GPU it runs too and says so at
# the top (tests/test_gpu_script.py runs it that way). benchmarks/README.md, "GPU check", has the
# rest: what to carry, what each row measures, how to read it.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: bash benchmarks/gpu.sh [options]          measure, print one table (5 to 8 minutes)
       bash benchmarks/gpu.sh --prepare [--firms N]  write build/gpu-carry/ to carry (needs network)

On the lent GPU machine (the device tool's `run`, carry ["build/gpu-carry"], timeout_s 540):

    set -o pipefail; bash benchmarks/gpu.sh --wheels build/gpu-carry/wheels --json $OUT/gpu.json 2>&1 | tee $OUT/gpu.log

Elsewhere, keeping a log:

    bash benchmarks/gpu.sh --wheels wheels/ 2>&1 | tee gpu.log

Before that, here, with network and the project's .venv (`make test` makes it):

    bash benchmarks/gpu.sh --prepare      # build/gpu-carry/: model/, firms.json.gz, wheels/ (~57 MiB)

Options:
  --wheels DIR      wheels to install offline, without their dependencies (default: CARRY/wheels)
  --carry DIR       the carried folder: model/, firms.json.gz, wheels/ (default: build/gpu-carry)
  --python PATH     run with this interpreter as it is (wheels, if any, go to a folder on
                    PYTHONPATH); the test passes its own
  --venv DIR        make or reuse this venv (default: the project's .venv when it imports ftm and
                    torch, else /tmp/ftm-gpu-venv made from --base-python)
  --base-python P   the interpreter a new venv is made from (default: python3)
  --firms N         corpus firms to map (default 200)
  --smallest        2 firms of one call, no plain BERTopic, a tiny reduce: a test of the script
  --json FILE       also write the report as JSON
  --prepare         write the carried folder instead of measuring
  -- ARGS           passed on to benchmarks/gpu.py (python benchmarks/gpu.py run --help)
EOF
}

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARRY="$REPO/build/gpu-carry"
WHEELS=""
PYTHON=""
VENV=""
BASE_PYTHON="python3"
PREPARE=0
ARGS=() # for gpu.py

while (($#)); do
	case "$1" in
	-h | --help) usage && exit 0 ;;
	--wheels) WHEELS="${2:?--wheels needs a folder}" && shift 2 ;;
	--carry) CARRY="${2:?--carry needs a folder}" && shift 2 ;;
	--python) PYTHON="${2:?--python needs a path}" && shift 2 ;;
	--venv) VENV="${2:?--venv needs a folder}" && shift 2 ;;
	--base-python) BASE_PYTHON="${2:?--base-python needs a path}" && shift 2 ;;
	--firms) ARGS+=(--firms "${2:?--firms needs a number}") && shift 2 ;;
	--json) ARGS+=(--json "$(realpath -m "${2:?--json needs a file}")") && shift 2 ;;
	--smallest) ARGS+=(--smallest) && shift ;;
	--prepare) PREPARE=1 && shift ;;
	--) shift && ARGS+=("$@") && break ;;
	*) echo "gpu.sh: unknown option $1 (see --help)" >&2 && exit 2 ;;
	esac
done
# Relative paths are the caller's; the script runs from the repository's root.
CARRY="$(realpath -m "$CARRY")"
[[ -z $WHEELS ]] || WHEELS="$(realpath -m "$WHEELS")"
cd "$REPO"

# Nothing reaches the network: models from folders, no hub look-ups; quiet progress bars.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1

if ((PREPARE)); then
	# The only step that needs network (pip download); it runs where the project's .venv is.
	PY="${PYTHON:-$REPO/.venv/bin/python}"
	[[ -x $PY ]] || { echo "gpu.sh --prepare needs the project's .venv (make test makes it) or --python" >&2 && exit 2; }
	exec "$PY" benchmarks/gpu.py prepare --carry "$CARRY" ${ARGS[@]+"${ARGS[@]}"}
fi
export PIP_NO_INDEX=1 # from here on pip installs only from the carried files

# Which torch an interpreter has, and whether it sees a GPU; exits 1 without torch.
describe_torch() {
	"$1" - 2>/dev/null <<'PY'
import torch
build = f"CUDA build {torch.version.cuda}" if torch.version.cuda else "a CPU build (no CUDA)"
seen = f"sees {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "sees no GPU"
print(f"torch {torch.__version__}, {build}, {seen}")
PY
}

echo "== machine"
echo "$(uname -n): $(nproc) CPU cores, $(uname -m), $(date -u '+%Y-%m-%d %H:%M UTC')"
if command -v nvidia-smi >/dev/null; then
	nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi failed"
else
	echo "nvidia-smi: not found (no NVIDIA driver on this machine)"
fi

echo "== python"
MADE_VENV=0
if [[ -n $PYTHON ]]; then
	PY="$PYTHON"
	echo "using $PY as given (--python)"
elif [[ -z $VENV && -x $REPO/.venv/bin/python ]] && "$REPO/.venv/bin/python" -c 'import ftm, torch' 2>/dev/null; then
	PY="$REPO/.venv/bin/python"
	echo "using the project's .venv (the Makefile's: torch==2.13.0, the CPU build, installed first)"
else
	VENV="${VENV:-/tmp/ftm-gpu-venv}"
	BASE="$(command -v "$BASE_PYTHON")" || { echo "no $BASE_PYTHON on PATH: pass --python or --base-python" >&2 && exit 2; }
	echo "base interpreter $BASE ($("$BASE" -V 2>&1)): $(describe_torch "$BASE" || echo 'no torch')"
	if [[ -x $VENV/bin/python ]]; then
		echo "reusing the venv $VENV"
	else
		# --system-site-packages: the machine's own torch (a CUDA build on the lent machine) stays
		# usable; the Makefile's torch==2.13.0 is a CPU build and could not be downloaded there anyway.
		# --without-pip: ensurepip may be missing; the base interpreter's pip is found through the
		# paths below and installs into this venv.
		echo "making the venv $VENV (--system-site-packages)"
		"$BASE" -m venv --system-site-packages --without-pip "$VENV"
	fi
	SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
	# When python3 is itself a venv (the lent machine's is /opt/torch/.venv), --system-site-packages
	# shows only the interpreter that venv was made from, not the venv's packages (torch among
	# them): a .pth file adds those after this venv's own, as site folders, so that their own .pth
	# files are read too.
	"$BASE" - >"$SITE/ftm-gpu-base.pth" <<'PY'
import site, sys
if sys.prefix != sys.base_prefix:
    for folder in site.getsitepackages():
        print(f"import site; site.addsitedir({folder!r})")
PY
	# ftm from this working tree without building it: hatchling, its build backend, is not there.
	echo "$REPO/src" >"$SITE/ftm-src.pth"
	PY="$VENV/bin/python"
	MADE_VENV=1
fi
echo "$PY ($("$PY" -V 2>&1)): $(describe_torch "$PY" || echo 'NO TORCH')"

WHEELS="${WHEELS:-$CARRY/wheels}"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
	echo "== installing wheels ($(compgen -G "$WHEELS/*.whl" | wc -l)) from $WHEELS (no index, no dependencies)"
	# --no-deps: the wheels are exactly what the machine lacks (gpu.py prepare chose them); resolving
	# ftm's own pins (pandas < 2.3, say) against the machine's newer packages would ask for more.
	if ((MADE_VENV)); then
		"$PY" -m pip install --quiet --no-index --no-deps --no-cache-dir "$WHEELS"/*.whl
	else
		# An interpreter given with --python, or the project's .venv, is left unchanged.
		TARGET="${TMPDIR:-/tmp}/ftm-gpu-site"
		"$PY" -m pip install --quiet --no-index --no-deps --no-cache-dir --upgrade --target "$TARGET" "$WHEELS"/*.whl
		export PYTHONPATH="$TARGET${PYTHONPATH:+:$PYTHONPATH}"
	fi
else
	echo "== no wheels in $WHEELS: using what $PY has"
fi

echo "== packages (found by name, not imported)"
"$PY" - <<'PY'
import importlib.metadata as metadata
import importlib.util
import sys

owners = metadata.packages_distributions()
missing = []
for module, needed in [
    ("torch", True), ("sentence_transformers", True), ("pydantic_settings", True), ("ftm", True),
    ("umap", True), ("hdbscan", True), ("bertopic", False), ("faiss", False), ("cuml", False),
    ("spacy", False),
]:
    if importlib.util.find_spec(module) is None:
        print(f"  {module:<22} not installed{' (NEEDED)' if needed else ''}")
        missing += [module] if needed else []
        continue
    versions = []
    for dist in dict.fromkeys(owners.get(module, [])):  # a folder on two paths lists it twice
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    print(f"  {module:<22} {', '.join(versions) or 'found (from the working tree)'}")
if missing:
    sys.exit(f"missing: {', '.join(missing)}; carry their wheels (bash benchmarks/gpu.sh --prepare)")
PY

echo "== measuring: benchmarks/gpu.py (the table comes last, on stdout)"
"$PY" benchmarks/gpu.py run --carry "$CARRY" ${ARGS[@]+"${ARGS[@]}"}
