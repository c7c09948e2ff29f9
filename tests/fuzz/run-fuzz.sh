#!/bin/sh
# run-fuzz.sh TARGET SEED_CORPUS WORK_DIR SECONDS: runs a libFuzzer target
# for SECONDS on a fresh copy of its committed seed corpus (libFuzzer writes
# new inputs into its first corpus directory; the committed one stays as it
# is). A crash, leak or sanitizer report fails the test; the input that
# caused it is left in WORK_DIR/artifacts/ to be fixed and then added to
# the seed corpus.
set -eu
target=$1 seeds=$2 work=$3 seconds=$4
rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
cp "$seeds"/* "$work/corpus/"
exec "$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" "$work/corpus"
