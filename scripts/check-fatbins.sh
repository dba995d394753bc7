#!/usr/bin/env bash
# After a `--features cuda` build: every kernel that csrc/ declares (its DSV4_SIM_ENTRY lines)
# must be in the embedded fatbins as SASS for sm_80 and for sm_90a, and each file must carry
# compute_80 PTX, so a stub or a silently skipped file cannot pass.
#   scripts/check-fatbins.sh TARGET_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/check-fatbins.sh TARGET_DIR}
# The newest build output that holds fatbins (a loop, not `| head`: an early-closed pipe would
# fail under pipefail).
out=
for d in $(ls -td "$target"/*/build/dsv4-kernels-*/out 2>/dev/null); do
    if [ -e "$d/fatbins.rs" ]; then
        out=$d
        break
    fi
done
[ -n "$out" ] || { echo "check-fatbins: no fatbins under $target (build with --features cuda first)" >&2; exit 1; }
status=0
for source in csrc/*.cu; do
    stem=$(basename "$source" .cu)
    fatbin="$out/$stem.fatbin"
    [ -f "$fatbin" ] || { echo "check-fatbins: $stem.fatbin missing"; status=1; continue; }
    cuobjdump --list-ptx "$fatbin" | grep -q "sm_80.ptx" || { echo "check-fatbins: $stem has no compute_80 PTX"; status=1; }
    usage=$(cuobjdump -res-usage "$fatbin")
    for kernel in $(sed -n 's/^DSV4_SIM_ENTRY(\(.*\))$/\1/p' "$source"); do
        built=yes
        for arch in sm_80 sm_90a; do
            # The functions listed after this arch's header, up to the next one.
            if ! awk -v arch="arch = $arch" -v k="Function $kernel:" '
                $0 ~ /^arch = / { inside = ($0 == arch) }
                inside && index($0, k) { found = 1 }
                END { exit !found }' <<<"$usage"; then
                echo "check-fatbins: $kernel ($stem.cu) is not built for $arch"
                status=1
                built=no
            fi
        done
        [ "$built" = yes ] && echo "  $kernel: sm_80, sm_90a"
    done
done
exit $status
