#!/usr/bin/env bash
# Runs one fuzz target under AFL++ (through afl.rs, on the stable toolchain) for a given
# time, single-threaded, from the seeds in fuzz/corpus/TARGET/. See fuzz/README.md.
#
#   scripts/fuzz.sh TARGET SECONDS [MAX_EXECS]
#
# TARGET is one of: smtp_session proxy_header config scenario api_body.
# Installs cargo-afl and builds AFL++ when they are missing. Findings go to
# fuzz/out/TARGET/default/{crashes,hangs}/ (FUZZ_OUT moves fuzz/out; FUZZ_TARGET_DIR moves
# the build, fuzz/target by default). A run resumes where the last one in the same output
# directory stopped.
set -euo pipefail

targets="smtp_session proxy_header config scenario api_body"
if [ $# -lt 2 ] || ! [[ " $targets " == *" $1 "* ]] || ! [[ $2 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 TARGET SECONDS [MAX_EXECS]   (TARGET: $targets)" >&2
    exit 2
fi
target=$1
seconds=$2
max_execs=${3:-}
repo=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v cargo-afl >/dev/null 2>&1; then
    cargo install --locked cargo-afl --version '^0.18'
fi
# Builds AFL++ and its runtime for this rustc, unless that is done already.
if ! built=$(cargo afl config --build 2>&1) && ! grep -q "already built" <<<"$built"; then
    echo "$built" >&2
    exit 1
fi

export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$repo/fuzz/target}
(cd "$repo/fuzz" && cargo afl build --release --bin "$target")

out=${FUZZ_OUT:-$repo/fuzz/out}
mkdir -p "$out"
args=(-i "$repo/fuzz/corpus/$target" -o "$out/$target" -V "$seconds" -t 2000)
if [ -n "$max_execs" ]; then
    args+=(-E "$max_execs")
fi
if [ -f "$repo/fuzz/dict/$target.dict" ]; then
    args+=(-x "$repo/fuzz/dict/$target.dict")
fi

# A shared machine: no CPU frequency or core binding demands; crashes are caught in
# process, so a core_pattern that pipes to a crash reporter is harmless.
export AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_AUTORESUME=1
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
if ! [ -t 1 ]; then
    export AFL_NO_UI=1
fi
cargo afl fuzz "${args[@]}" "$CARGO_TARGET_DIR/release/$target"

stats="$out/$target/default/fuzzer_stats"
if [ -f "$stats" ]; then
    grep -E '^(run_time|execs_done|execs_per_sec|corpus_count|edges_found|total_edges|bitmap_cvg|saved_crashes|saved_hangs) ' "$stats"
fi
