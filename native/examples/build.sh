#!/usr/bin/env bash
# Builds native/examples/classify against the header and a published libmnistnative.so.
# usage: native/examples/build.sh LIBDIR [OUTDIR]   (LIBDIR holds libmnistnative.so; OUTDIR defaults to LIBDIR)
# The binary finds the library beside itself (rpath $ORIGIN), so copy both together.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
libdir="$(cd "$1" && pwd)"
outdir="${2:-$libdir}"
mkdir -p "$outdir"
[ -f "$outdir/libmnistnative.so" ] || cp "$libdir/libmnistnative.so" "$outdir/"
${CC:-cc} -std=c11 -O2 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=199309L \
  -I "$here/../include" "$here/classify.c" \
  -L "$libdir" -lmnistnative -Wl,-rpath,'$ORIGIN' \
  -o "$outdir/classify"
echo "$outdir/classify"
