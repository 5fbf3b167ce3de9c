#!/bin/sh
# Runs the image's server as the image does (busybox httpd from app/bin, serving
# app/www) on a free loopback port and checks it: GET /health answers "ok", every file
# under app/www is served as it is, an unknown path is a 404. Writes coverage.xml
# (Cobertura): one class per file under app/www, its lines hit when it was served intact.
set -eu
cd "$(dirname "$0")/.."

BB="$(pwd)/app/bin/busybox"
[ -x "$BB" ] || { echo "test: $BB is missing (run make image-context)" >&2; exit 1; }
rm -f coverage.xml

work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# wget's own -T segfaults in Debian's static busybox 1.35: use the timeout applet.
fetch() { # fetch PATH OUTPUT → exit status of the request
    "$BB" timeout 5 "$BB" wget -q -Y off -O "$2" "http://127.0.0.1:$port$1"
}

# Find a free port: httpd exits at once when the port is taken.
port=$((20000 + $$ % 20000))
tries=0
while :; do
    "$BB" httpd -f -p "127.0.0.1:$port" -h app/www 2>"$work/httpd.log" &
    server=$!
    up=no
    for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
        kill -0 "$server" 2>/dev/null || break
        if fetch /health "$work/probe" 2>/dev/null; then up=yes; break; fi
        sleep 0.1 2>/dev/null || sleep 1
    done
    [ "$up" = yes ] && break
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
    tries=$((tries + 1))
    if [ "$tries" -ge 30 ]; then
        echo "test: could not start busybox httpd on a free port:" >&2
        cat "$work/httpd.log" >&2
        exit 1
    fi
    port=$((port + 1))
done
echo "test: serving app/www on 127.0.0.1:$port"

failures=0
fail() {
    echo "test: FAIL $*" >&2
    failures=$((failures + 1))
}

fetch /health "$work/health" || fail "GET /health did not answer 200"
if [ "$(cat "$work/health")" = "ok" ]; then
    echo "test: GET /health -> ok"
else
    fail "GET /health answered '$(cat "$work/health")', expected 'ok'"
fi

if "$BB" timeout 5 "$BB" wget -S -Y off -O /dev/null "http://127.0.0.1:$port/no-such-page" 2>"$work/404" ; then
    fail "GET /no-such-page answered 200, expected 404"
elif grep -q ' 404' "$work/404"; then
    echo "test: GET /no-such-page -> 404"
else
    fail "GET /no-such-page did not answer 404: $(cat "$work/404")"
fi

# Every file the image serves, fetched and compared; the coverage report lists them.
classes=""
lines_valid=0
lines_covered=0
for file in $(cd app/www && "$BB" find . -type f | sort); do
    path=${file#./}
    lines=$("$BB" wc -l < "app/www/$path" | tr -d ' ')
    [ "$lines" -gt 0 ] || lines=1
    hits=0
    if fetch "/$path" "$work/body" && "$BB" cmp -s "$work/body" "app/www/$path"; then
        hits=1
        echo "test: GET /$path -> served intact"
    else
        fail "GET /$path was not served as app/www/$path"
    fi
    line_xml=""
    n=1
    while [ "$n" -le "$lines" ]; do
        line_xml="$line_xml<line number=\"$n\" hits=\"$hits\"/>"
        n=$((n + 1))
    done
    rate=$hits
    classes="$classes
        <class name=\"$path\" filename=\"$path\" line-rate=\"$rate\" branch-rate=\"0\" complexity=\"0\">
          <methods/>
          <lines>$line_xml</lines>
        </class>"
    lines_valid=$((lines_valid + lines))
    lines_covered=$((lines_covered + lines * hits))
done

[ "$lines_valid" -gt 0 ] || fail "no file found under app/www"
if [ "$failures" -gt 0 ]; then
    echo "test: $failures failure(s)" >&2
    exit 1
fi

rate=$("$BB" awk -v c="$lines_covered" -v v="$lines_valid" 'BEGIN { if (v == 0) print "0"; else printf "%.4f", c / v }')
cat > coverage.xml <<XML
<?xml version="1.0" ?>
<!DOCTYPE coverage SYSTEM "http://cobertura.sourceforge.net/xml/coverage-04.dtd">
<coverage version="1" timestamp="$("$BB" date +%s)000" lines-valid="$lines_valid" lines-covered="$lines_covered" line-rate="$rate" branches-valid="0" branches-covered="0" branch-rate="0" complexity="0">
  <sources>
    <source>app/www</source>
  </sources>
  <packages>
    <package name="www" line-rate="$rate" branch-rate="0" complexity="0">
      <classes>$classes
      </classes>
    </package>
  </packages>
</coverage>
XML
echo "test: all passed; coverage.xml: $lines_covered of $lines_valid lines served"
