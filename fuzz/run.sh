#!/usr/bin/env bash
# Seeds each fuzz target's corpus from the reference fixtures in tests/fixtures/reference, then runs the targets one
# after the other for a bounded time each.
#   fuzz/run.sh [SECONDS_PER_TARGET (default 120)] [TARGET...]
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-120}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(image_ref policy_parse admission_respond keyring)
fi

reference="../tests/fixtures/reference"

seed() {
  local target="$1"
  local dir="corpus/$target"
  mkdir -p "$dir"
  case "$target" in
    image_ref)
      python3 - "$reference/image_refs.json" "$dir" <<'PY'
import json, sys, hashlib, os
for case in json.load(open(sys.argv[1]))["cases"]:
    data = case["input"].encode()
    open(os.path.join(sys.argv[2], "seed-" + hashlib.sha1(data).hexdigest()), "wb").write(data)
PY
      ;;
    keyring)
      python3 - "$reference/kubelet_keyring.json" "$dir" <<'PY'
import json, sys, hashlib, os
d = json.load(open(sys.argv[1]))
pairs = [(c["glob_key"], c["target"]) for c in d["url_match_cases"]]
pairs += [(c["auths_key"], "") for c in d["key_normalization_cases"]]
pairs += [("", c["image"]) for c in d["is_default_registry_match_cases"]]
pairs += [(a["key"], c["lookup_target"]) for c in d["lookup_cases"] for a in c["auths"]]
for pattern, target in pairs:
    data = (pattern + "\n" + target).encode()
    open(os.path.join(sys.argv[2], "seed-" + hashlib.sha1(data).hexdigest()), "wb").write(data)
PY
      ;;
    policy_parse)
      cp ../examples/policy.yaml "$dir/seed-example-policy.yaml"
      # The documented example, with a selector and matchExpressions.
      awk '/^```yaml/{on=1; next} /^```/{on=0} on' ../docs/policy.md >"$dir/seed-docs-policy.yaml"
      ;;
    admission_respond)
      cp "$reference"/admission_review_samples/*.json "$dir/"
      ;;
  esac
}

for target in "${targets[@]}"; do
  seed "$target"
  echo "== fuzz $target for ${seconds}s"
  # One job, one worker: the machine is shared.
  extra=()
  case "$target" in
    image_ref | keyring) extra=(-max_len=512) ;;
    policy_parse) extra=(-max_len=8192 -dict=dict/policy.dict) ;;
    admission_respond) extra=(-max_len=16384 -dict=dict/admission.dict) ;;
  esac
  status=0
  cargo +nightly fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    "${extra[@]}" >"fuzz-$target.log" 2>&1 || status=$?
  grep -aE '^(#[0-9]+[[:space:]]+(INITED|DONE)|Done |stat::number_of_executed_units|==[0-9]+==|SUMMARY|Test unit written|thread .* panicked)' \
    "fuzz-$target.log" || true
  if [ "$status" -ne 0 ]; then
    echo "!! $target stopped with status $status: see fuzz/fuzz-$target.log and fuzz/artifacts/$target/"
    failed=1
  fi
done
exit "${failed:-0}"
