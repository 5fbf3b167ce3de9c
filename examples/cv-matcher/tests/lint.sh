#!/bin/sh
# Static checks of the app: scripts parse, the Dockerfile only copies what exists and
# serves on the port the task definition maps, the health page says ok.
set -eu
cd "$(dirname "$0")/.."

failures=0
fail() {
    echo "lint: $*" >&2
    failures=$((failures + 1))
}

for script in tests/*.sh; do
    sh -n "$script" || fail "$script does not parse"
done

[ -f Dockerfile ] || { echo "lint: Dockerfile is missing" >&2; exit 1; }
first=$(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' Dockerfile | head -n 1)
[ "$first" = "FROM scratch" ] || fail "the Dockerfile must start with FROM scratch (nothing can be pulled), found: $first"
grep -q '^EXPOSE 8000$' Dockerfile || fail "the Dockerfile must EXPOSE 8000"
grep -q '^ENTRYPOINT .*"-p", "8000"' Dockerfile || fail "the ENTRYPOINT must serve on port 8000"
grep -q '"containerPort": 8000' .aws/task-definition.json || fail ".aws/task-definition.json must map containerPort 8000"

# Every COPY source must exist in the build context.
grep '^COPY ' Dockerfile | while read -r _ rest; do
    set -- $rest
    while [ $# -gt 1 ]; do
        case "$1" in
            --*) ;;
            *) [ -e "$1" ] || { echo "lint: COPY source $1 does not exist" >&2; exit 1; } ;;
        esac
        shift
    done
done || fail "a COPY source is missing (run make image-context)"

[ -x app/bin/busybox ] || fail "app/bin/busybox is missing (run make image-context)"
if [ -x app/bin/busybox ]; then
    app/bin/busybox true || fail "app/bin/busybox does not run"
fi
[ "$(cat app/www/health 2>/dev/null)" = "ok" ] || fail "app/www/health must contain exactly: ok"

for file in Dockerfile Makefile tests/*.sh; do
    if grep -n '[[:space:]]$' "$file" >/dev/null; then
        fail "$file has trailing whitespace"
    fi
done

if [ "$failures" -gt 0 ]; then
    echo "lint: $failures problem(s)" >&2
    exit 1
fi
echo "lint: ok"
