#!/usr/bin/env bash
# Render an ethicsweep report in headless Chromium with every network route closed, and
# check that its plots were drawn by the inlined plotly.js (not fetched from anywhere).
#
#   benchmarks/render_report.sh REPORT.html [SCREENSHOT.png]
#
# Needs Debian's chromium (apt-get install chromium). Prints the number of figures in the
# page and of plotly's drawn SVG layers (3 per figure when every figure rendered), and
# writes a full-page screenshot (default: report.png beside the report). Exit 1 when a
# figure was not drawn.
set -euo pipefail
report="$(realpath "$1")"
shot="${2:-$(dirname "$report")/report.png}"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
# --proxy-server to a closed port and a resolver that finds nothing: any fetch fails.
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --user-data-dir="$profile" --proxy-server=127.0.0.1:9
       --host-resolver-rules="MAP * ~NOTFOUND" --virtual-time-budget=15000 --hide-scrollbars)
chromium "${flags[@]}" --dump-dom "file://$report" 2>/dev/null > "$profile/dom.html"
figures=$(grep -o '<div class="figure">' "$profile/dom.html" | wc -l)
drawn=$(grep -o 'class="main-svg"' "$profile/dom.html" | wc -l)
external=$(grep -oE '<(script|link)[^>]+(src|href)="https?://' "$profile/dom.html" | wc -l || true)
chromium "${flags[@]}" --window-size=1300,5200 --screenshot="$shot" "file://$report" >/dev/null 2>&1
echo "figures: $figures; plotly SVG layers drawn: $drawn (expected $((3 * figures))); external scripts or styles: $external"
echo "screenshot: $shot"
[ "$drawn" -ge $((3 * figures)) ] && [ "$external" -eq 0 ]
