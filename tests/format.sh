#!/usr/bin/env bash
# Every C file of the project is formatted as .clang-format says
# (clang-format --dry-run -Werror); names each file that is not.
set -euo pipefail
cd "${MSRS_SOURCE_DIR:-$(dirname "$0")/..}"
mapfile -t files < <(find libevents common sdk archive services replay tools tests bench \
  -name '*.[ch]' -not -path '*/build*' 2>/dev/null | sort)
if ! out=$(clang-format --dry-run -Werror "${files[@]}" 2>&1); then
  echo "$out" | grep -o '^[^:]*\.[ch]' | sort -u | sed 's/^/not formatted: /'
  echo "format: run clang-format -i on the files above (${#files[@]} checked)" >&2
  exit 1
fi
echo "format: ${#files[@]} C files formatted as .clang-format says"
