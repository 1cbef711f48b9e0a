#!/usr/bin/env bash
# ESP32 units (issue 5): the firmware's C core is built and tested on the host with gcc + make,
# including an AddressSanitizer/UBSan run (libasan/libubsan come with Debian's gcc). Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v make >/dev/null 2>&1 || need+=(make)
[ -e /usr/include/stdio.h ] || need+=(libc6-dev)
# the sanitizer runtime: present with gcc on Debian 12, installed here if a slim image lacks it
if command -v gcc >/dev/null 2>&1 && ! echo 'int main(void){return 0;}' \
        | gcc -x c -fsanitize=address,undefined -o /dev/null - >/dev/null 2>&1; then
    need+=(libasan8 libubsan1)
fi
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "esp32: gcc $(gcc -dumpversion), make $(make --version | head -1 | awk '{print $3}')"
