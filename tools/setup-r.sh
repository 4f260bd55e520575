#!/usr/bin/env bash
# setup-r.sh: make sure R and every R package named in ./DESCRIPTION are installed.
# R comes from Debian only (CRAN is unreachable here): each package maps to r-cran-<lowercase name>.
# Installs through apt only what is missing, so a ready machine pays one Rscript start.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=$(sed -n '/^Imports:/,/^[A-Z][A-Za-z]*:/p' DESCRIPTION | sed '1s/^Imports://; /^[A-Z][A-Za-z]*:/d' \
       | tr ',' '\n' | sed 's/(.*)//; s/[[:space:]]//g' | grep -v '^$')
missing_debs=()
if command -v Rscript >/dev/null 2>&1; then
  for p in $pkgs; do
    Rscript --vanilla -e "quit(status = if (requireNamespace('$p', quietly = TRUE)) 0 else 1)" >/dev/null 2>&1 \
      || missing_debs+=("r-cran-$(echo "$p" | tr 'A-Z' 'a-z')")
  done
else
  missing_debs=(r-base-core r-base-dev)
  for p in $pkgs; do missing_debs+=("r-cran-$(echo "$p" | tr 'A-Z' 'a-z')"); done
fi
# r-base-dev brings the headers rpy2 compiles against.
[ -f /usr/share/R/include/R.h ] || missing_debs+=(r-base-dev)
if [ ${#missing_debs[@]} -gt 0 ]; then
  echo "setup-r: installing ${missing_debs[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing_debs[@]}" >/dev/null
fi
