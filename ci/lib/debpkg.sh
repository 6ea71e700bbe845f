# Pinned Debian packages (sourced by ci/build-guest and ci/build-workloads, not run).
#
# A pins file has lines "<package:arch> <version> <sha256 of the .deb>"; packages are fetched
# with `apt-get download` from whatever archive apt is configured with, checked against their
# pin, cached in $dl, and extracted to <dir>/<package>/ (re-extracted only when the pin changes).
#
# The caller defines say() and die() and sets:
#   dl           download cache directory
#   pins         the pins file (for messages)
#   refresh_cmd  the command that rewrites the pins file (for messages)

apt_updated=0
apt_update() {
    [[ $apt_updated == 1 ]] && return 0
    say "apt-get update"
    # A partial failure (e.g. a mirror mid-sync for one index) is not fatal: what we need is
    # checked afterwards.
    apt-get update -q >/dev/null 2>&1 || say "warning: apt-get update reported errors; continuing with the indexes it got"
    apt_updated=1
}

# ensure_foreign_arch ARCH: dpkg knows ARCH (i386 on an amd64 host), so that apt offers its packages.
ensure_foreign_arch() {
    [[ $1 == "$(dpkg --print-architecture)" ]] && return 0
    if ! dpkg --print-foreign-architectures | grep -qx "$1"; then
        say "adding $1 as a dpkg foreign architecture"
        dpkg --add-architecture "$1"
        apt_updated=0
        apt_update
    fi
}

candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}'; }
field_of() {  # field_of PKG=VERSION FIELD
    apt-cache show "$1" 2>/dev/null | awk -v f="$2:" '$1 == f {print $2; exit}'
}
pin_line() {  # pin_line PKG:ARCH -> "PKG:ARCH VERSION SHA256" of apt's candidate
    local v sha
    v=$(candidate "$1")
    [[ -n $v && $v != "(none)" ]] || die "apt offers no $1"
    sha=$(field_of "$1=$v" SHA256)
    [[ -n $sha ]] || die "no SHA256 for $1=$v"
    echo "$1 $v $sha"
}

deb_name() {  # deb_name PKG:ARCH VERSION -> file name apt-get download uses
    local name=${1%%:*} arch=${1##*:} ver=${2//:/%3a}
    echo "${name}_${ver}_${arch}.deb"
}
verify_deb() {  # verify_deb FILE SHA256 -> 0 if it matches (cached by size+mtime)
    local f=$1 want=$2 ok=$1.verified key
    [[ -f $f ]] || return 1
    key="$want $(stat -c '%s %Y' "$f")"
    [[ -f $ok && $(cat "$ok") == "$key" ]] && return 0
    [[ $(sha256sum "$f" | cut -d' ' -f1) == "$want" ]] || return 1
    echo "$key" >"$ok"
}
fetch_pinned() {  # fetch_pinned PKG:ARCH VERSION SHA256 -> $dl/<deb>, checked
    local pkg=$1 ver=$2 sha=$3 f
    f=$dl/$(deb_name "$pkg" "$ver")
    verify_deb "$f" "$sha" && return 0
    if [[ -f $f ]]; then
        say "cached $f does not match its pin; downloading again"
        rm -f "$f" "$f.verified"
    fi
    ensure_foreign_arch "${pkg##*:}"
    if [[ -z $(field_of "$pkg=$ver" SHA256) ]]; then
        apt_update
    fi
    if [[ -n $(field_of "$pkg=$ver" SHA256) ]]; then
        say "downloading $pkg=$ver"
        (cd "$dl" && apt-get download -q "$pkg=$ver" >/dev/null 2>&1) || die "apt-get download $pkg=$ver failed"
    else
        fetch_by_sibling "$pkg" "$ver" "$sha" "$f" || die "pinned $pkg=$ver is no longer offered by apt.
  Refresh the pins with: $refresh_cmd   (then check and commit $pins)"
    fi
    [[ -f $f ]] || die "apt-get download $pkg=$ver did not produce $f"
    if ! verify_deb "$f" "$sha"; then
        mv "$f" "$f.bad"
        die "sha256 of $f differs from $pins ($sha); kept as $f.bad.
  If the archive legitimately changed, refresh the pins with: $refresh_cmd"
    fi
}
# fetch_by_sibling PKG:ARCH VERSION SHA256 FILE: when one architecture's index lacks a pinned
# version that the archive still holds (seen: bookworm-security's i386 index failing to update,
# "Mirror sync in progress?"), the host architecture's index names the same version's pool path;
# the .deb for ARCH lies beside it. apt's own downloader fetches it (apt's proxy and archive
# settings apply) and checks it against the pin's sha256.
fetch_by_sibling() {
    local pkg=$1 ver=$2 sha=$3 f=$4 host uri
    host=$(dpkg --print-architecture)
    [[ ${pkg##*:} != "$host" ]] || return 1
    uri=$(apt-get download --print-uris "${pkg%%:*}:$host=$ver" 2>/dev/null | awk '{print $1; exit}' | tr -d "'")
    [[ $uri == *_"$host".deb ]] || return 1
    uri=${uri%_"$host".deb}_${pkg##*:}.deb
    say "downloading $pkg=$ver by the $host index's pool path (apt's ${pkg##*:} index lacks it)"
    /usr/lib/apt/apt-helper download-file "$uri" "$f" "SHA256:$sha" >/dev/null 2>&1 || { rm -f "$f"; return 1; }
}
extract() {  # extract DIR PKG:ARCH VERSION SHA256 [MEMBERS...] -> DIR/<pkg>/
    local base=$1 pkg=$2 ver=$3 sha=$4; shift 4
    local d=$base/${pkg%%:*} f
    f=$dl/$(deb_name "$pkg" "$ver")
    [[ -f $d.stamp && $(cat "$d.stamp") == "$sha" ]] && return 0
    say "extracting $pkg $ver"
    rm -rf "$d" "$d.stamp"
    mkdir -p "$d"
    if (($#)); then
        dpkg-deb --fsys-tarfile "$f" | tar -x -C "$d" --wildcards "$@"
    else
        dpkg-deb -x "$f" "$d"
    fi
    echo "$sha" >"$d.stamp"
}
