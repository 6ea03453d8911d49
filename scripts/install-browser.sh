#!/usr/bin/env bash
# The annotation UI test drives Debian's chromium through chromium-driver (never a downloaded browser).
# Install both from the local apt cache (never fetched) when they are missing; without them that one test is
# skipped. The cached .debs are named explicitly: their version can be newer than the apt lists' candidate.
set -u
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "chromium not installed and not root: the browser test will be skipped"; exit 0
fi
shopt -s nullglob
debs=(/var/cache/apt/archives/chromium{,-common,-driver}_*.deb)
if [ ${#debs[@]} -lt 3 ]; then
  echo "chromium is not in the apt cache: the browser test will be skipped"
else
  apt-get install -y -qq --no-download --no-install-recommends "${debs[@]}" >/dev/null 2>&1 \
    || echo "chromium could not be installed from the apt cache: the browser test will be skipped"
fi
