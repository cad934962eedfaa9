# Helpers for the throwaway apps in tests/deps (sourced, bash).
#
# Each app is made in a fresh directory under $work, against a snapshot of
# this checkout's files (tracked and untracked, not ignored: what a commit of
# the working tree would hold), so what is tested is what is on disk, and the
# checkout itself is never built into.

set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
work=$(mktemp -d /tmp/portnode-deps.XXXXXX)
pids=()

cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    exit 1
}

ok() {
    echo "ok: $*"
}

# snapshot DIR: a git repository in DIR with one commit of the checkout's files.
snapshot() {
    local dir=$1
    mkdir -p "$dir"
    (cd "$root" && git ls-files -z -co --exclude-standard | xargs -0 cp --parents -a -t "$dir") \
        || fail "copying the checkout to $dir"
    (cd "$dir" && git init -q -b main && git add -A \
        && git -c user.email=test@portnode -c user.name=test commit -qm snapshot) \
        || fail "committing the snapshot in $dir"
}

# timed LABEL CMD...: runs CMD (output to $work/LABEL.log), prints its time,
# fails with the log's tail if it fails.
timed() {
    local label=$1 start rc
    shift
    start=$EPOCHREALTIME
    "$@" >"$work/$label.log" 2>&1
    rc=$?
    awk -v l="$label" -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "time: %s %.1f s\n", l, b - a }'
    if [ $rc != 0 ]; then
        tail -30 "$work/$label.log"
        fail "$label (exit $rc)"
    fi
}

# no_match LABEL REGEX: the log of LABEL has no line matching REGEX.
no_match() {
    if grep -E "$2" "$work/$1.log"; then
        fail "$1 printed '$2'"
    fi
}

# wait_file FILE SECONDS: until FILE is non-empty.
wait_file() {
    local i
    for i in $(seq $(($2 * 10))); do
        [ -s "$1" ] && return 0
        sleep 0.1
    done
    return 1
}

# wait_gone PID SECONDS
wait_gone() {
    local i
    for i in $(seq $(($2 * 10))); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}
