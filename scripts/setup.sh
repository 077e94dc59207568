# Sourced by demo.sh and test.sh: makes sure the build tools and libraries
# are installed. As root it installs what is missing with apt-get; as
# anyone else it prints the exact line to run and stops.
# Usage: source scripts/setup.sh; convmat_require PACKAGE...

convmat_missing_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  echo "${missing[@]}"
}

convmat_require() {
  local missing
  missing=$(convmat_missing_packages "$@")
  [ -z "$missing" ] && return 0
  if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "convmat: not a Debian system; please install: $* (Eigen 3.4+, Catch2, CMake 3.14+, a C++17 compiler)" >&2
    return 1
  fi
  if [ "$(id -u)" = 0 ]; then
    echo "convmat: installing $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $missing >/dev/null || {
      echo "convmat: apt-get install $missing failed" >&2
      return 1
    }
  else
    echo "convmat: missing packages. Install them with:" >&2
    echo "  sudo apt-get install -y $missing" >&2
    return 1
  fi
}

# The packages every build needs.
CONVMAT_BASE_PACKAGES="g++ cmake make libeigen3-dev catch2 pkg-config"
