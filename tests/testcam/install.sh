#!/bin/sh
# Installs the test camera plugin (built as BUILD/lib/libv4l-msrs-testcam.so)
# into libv4l's plugins folder, where libv4l2 looks for plugins on every
# v4l2_open. It claims only regular files that begin with "MSRSCAM1".
#   tests/testcam/install.sh [BUILD_DIR]      default build
# Exit 0 installed (or already the same), 77 the folder is not writable
# (not root): the camera tests are skipped, and say so.
set -eu
build=${1:-build}
so="$build/lib/libv4l-msrs-testcam.so"
dir="$(pkg-config --variable=libdir libv4l2)/libv4l/plugins"
[ -f "$so" ] || { echo "install.sh: $so: not built (cmake --build $build)" >&2; exit 1; }
if [ -f "$dir/libv4l-msrs-testcam.so" ] && cmp -s "$so" "$dir/libv4l-msrs-testcam.so"; then exit 0; fi
mkdir -p "$dir" 2>/dev/null || true
if ! [ -w "$dir" ]; then
  echo "install.sh: $dir is not writable: the test camera cannot be installed (run as root)" >&2
  exit 77
fi
# a new file renamed into place: a process that has the old one mapped keeps it
cp "$so" "$dir/.libv4l-msrs-testcam.so.new" && mv "$dir/.libv4l-msrs-testcam.so.new" "$dir/libv4l-msrs-testcam.so"
