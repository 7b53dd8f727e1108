#!/usr/bin/env bash
# Installs the Debian packages the registry tests need:
#   docker-registry  the CNCF distribution registry (tests run /usr/bin/docker-registry themselves)
#   skopeo           pushes a test image and authenticates with a generated .dockerconfigjson
#   apache2-utils    htpasswd -B for the registry's bcrypt htpasswd file
#   golang-go        Go's net/http client (the API server's stack) in tests/hostile.rs
# Idempotent: does nothing when everything is present. The package's own service is never
# needed; it is stopped and disabled if a service manager started it.
set -euo pipefail

need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
command -v go >/dev/null 2>&1 || need+=(golang-go)

if [ "${#need[@]}" -eq 0 ]; then
  echo "setup-apt: docker-registry, skopeo, htpasswd and go already installed"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  SUDO=(sudo -E)
fi

# Keep maintainer scripts from starting the registry service (policy-rc.d exit 101 = "not
# allowed"); only when we create it, and removed again afterwards.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 0755 "$policy"
  made_policy=1
fi
cleanup() { if [ "$made_policy" -eq 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${need[@]}"

# If systemd is running and enabled the unit anyway, the tests do not want it on :5000.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  "${SUDO[@]}" systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
fi

for tool in docker-registry skopeo htpasswd go; do
  command -v "$tool" >/dev/null 2>&1 || { echo "setup-apt: $tool still missing" >&2; exit 1; }
done
echo "setup-apt: installed ${need[*]}"
