#!/usr/bin/env bash
# Real test images from Debian's opencv-doc (graf, leuven, ...). Downloaded, unpacked, never
# installed. Usage: fetch_test_assets.sh DEST
set -euo pipefail
mkdir -p "$1"
DEST=$(cd "$1" && pwd)
data=$DEST/opencv-doc/usr/share/doc/opencv-doc/examples/data
if [ -f "$data/graf1.png" ] && [ -f "$data/leuvenA.jpg" ]; then
  echo "[setup] test images present"; exit 0
fi
mkdir -p "$DEST/debs"
cd "$DEST/debs"
if ! ls opencv-doc_*.deb >/dev/null 2>&1; then
  echo "[setup] fetching Debian opencv-doc (real test images)"
  apt-get download opencv-doc >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 || true; apt-get download opencv-doc >/dev/null; }
fi
rm -rf "$DEST/opencv-doc.tmp"
dpkg-deb -x opencv-doc_*.deb "$DEST/opencv-doc.tmp"
# Keep only the example images (the package also carries ~400 MB of HTML docs).
keep=usr/share/doc/opencv-doc/examples/data
mkdir -p "$DEST/opencv-doc.keep/$(dirname "$keep")"
mv "$DEST/opencv-doc.tmp/$keep" "$DEST/opencv-doc.keep/$keep"
rm -rf "$DEST/opencv-doc.tmp" "$DEST/opencv-doc"
mv "$DEST/opencv-doc.keep" "$DEST/opencv-doc"
# Some images ship gzip-compressed.
find "$DEST/opencv-doc" -name '*.gz' -exec gunzip -f {} +
echo "[setup] test images in $data"
