#!/usr/bin/env bash
# Install the Debian packages MetaHub's demo and tests use, only when something is missing.
# `make demo` needs a C compiler and static libc; `make test-fast` also the real registry and
# PostgreSQL; `make test` also drives the real container runtimes, nginx (load balancer and
# benchmark baseline), wrk and Chromium (the web UI's browser test).
set -euo pipefail

demo_packages=(gcc libc6-dev)
fast_packages=(docker-registry postgresql)
test_packages=(docker.io containerd runc podman skopeo busybox-static
               uidmap iptables nginx-light wrk chromium)

case "${1:-test}" in
  demo) wanted=("${demo_packages[@]}") ;;
  fast) wanted=("${demo_packages[@]}" "${fast_packages[@]}") ;;
  test) wanted=("${demo_packages[@]}" "${fast_packages[@]}" "${test_packages[@]}") ;;
  *) echo "usage: $0 [demo|fast|test]" >&2; exit 2 ;;
esac

missing=()
for package in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
((${#missing[@]})) || exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} (run as root, or install them yourself)" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
