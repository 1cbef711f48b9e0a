#!/usr/bin/env bash
# Deploy tests (tests/deploy) read the units with systemd's own tools: systemd-analyze verify and
# security, systemd-sysusers and systemd-tmpfiles with --root, and the unit library in
# /usr/lib/systemd/system. Debian's `systemd` package brings them all; nothing is started.
# kubectl (kustomize), kubernetes-validate and hadolint come from pip's test extra.
# Idempotent: a machine that has them returns at once.
set -euo pipefail

if ! command -v systemd-analyze >/dev/null 2>&1 || [ ! -e /usr/lib/systemd/system/sysinit.target ]; then
    echo "deploy.sh: installing Debian's systemd package (systemd-analyze, sysusers, tmpfiles)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
# udevadm (Debian's `udev` package) parses the ESP32 adapters' rule (tests/deploy/test_udev.py);
# unshare (util-linux, always present) keeps that parse in a private mount namespace; libseccomp2
# (a dependency of systemd) builds the unit's syscall filter (tests/deploy/test_syscall_filter.py).
if ! command -v udevadm >/dev/null 2>&1; then
    echo "deploy.sh: installing Debian's udev package (udevadm)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends udev >/dev/null
fi
echo "deploy.sh: $(systemd-analyze --version | head -1)"
