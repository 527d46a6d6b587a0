#!/bin/sh
# Fails if anything under token/ calls the heap allocator or includes stdio,
# nng or libusb. The token runs in a fixed RAM arena with no I/O of its own.
# Usage: check_token_purity.sh TOKEN_DIR
dir=${1:?usage: check_token_purity.sh TOKEN_DIR}
[ -d "$dir" ] || { echo "no such directory: $dir"; exit 2; }
n=$(find "$dir" -name '*.[ch]' | wc -l)
[ "$n" -gt 0 ] || { echo "no C sources under $dir"; exit 2; }
bad=$(grep -nE '\b(malloc|calloc|realloc|free|strdup|aligned_alloc|posix_memalign|sodium_malloc)[[:space:]]*\(|#[[:space:]]*include[[:space:]]*[<"](stdio\.h|nng/|libusb)' \
      $(find "$dir" -name '*.[ch]') )
if [ -n "$bad" ]; then
  echo "token/ must not use the heap or include stdio, nng or libusb:"
  echo "$bad"
  exit 1
fi
echo "token/: $n files, no heap, no stdio, no nng, no libusb"
echo "1 passed, 0 failed"
