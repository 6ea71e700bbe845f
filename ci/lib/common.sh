# Shared helpers for the ci/ scripts (sourced, not run).

# ensure_packages PKG...: installs the Debian packages that are missing, with one apt-get call.
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing Debian packages: ${missing[*]}"
  # The package lists may be missing or stale on a fresh machine.
  # A failed index (e.g. a mirror mid-sync) is only a warning: the install below says if it matters.
  apt-get update -q >/dev/null || echo "warning: apt-get update reported errors; trying the install anyway" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || { echo "apt-get install ${missing[*]} failed" >&2; return 1; }
}
