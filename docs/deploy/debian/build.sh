#!/usr/bin/env bash
# Builds ocpp-gateway_<version>_<arch>.deb from a tree made by `make install-files` (called by `make deb`).
#   build.sh ROOT VERSION OUTDIR
# ROOT holds the installed files (usr/bin/ocpp-gateway, etc/ocpp-gateway, lib/systemd/system …).
# Depends: the Debian packages owning the shared libraries the binary links. A library no package
# owns (a Swift runtime under /opt) is an error, since the package would not run on another box,
# unless DEB_ALLOW_UNPACKAGED_LIBS=1 (the install test, which packages the debug build; it also sets
# DEB_COMPRESS=none: xz over a 100 MB debug binary takes half a minute).
set -euo pipefail
root=$1 version=$2 outdir=$3
here=$(cd "$(dirname "$0")" && pwd)
arch=$(dpkg --print-architecture)
binary="$root/usr/bin/ocpp-gateway"

depends=()
unpackaged=()
while read -r lib; do
    real=$(readlink -f "$lib")
    owner=""
    for candidate in "$lib" "$real" "${real#/usr}" "/usr$real"; do
        owner=$(dpkg -S "$candidate" 2>/dev/null | head -n 1 | cut -d: -f1) && [ -n "$owner" ] && break
    done
    if [ -n "$owner" ]; then depends+=("$owner"); else unpackaged+=("$lib"); fi
done < <(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
if [ ${#unpackaged[@]} -gt 0 ] && [ "${DEB_ALLOW_UNPACKAGED_LIBS:-0}" != 1 ]; then
    echo "error: $binary links libraries no Debian package provides: ${unpackaged[*]}" >&2
    echo "       build it with --static-swift-stdlib (make deb does)" >&2
    exit 1
fi
depends_line=$(printf '%s\n' "${depends[@]}" | sort -u | paste -sd, - | sed 's/,/, /g')

mkdir -p "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@INSTALLED_SIZE@|$size|" -e "s|@DEPENDS@|$depends_line|" \
    "$here/control" > "$root/DEBIAN/control"
# Every file under /etc is a conffile: dpkg keeps an operator's edits on upgrade.
(cd "$root" && find etc -type f | sort | sed 's|^|/|') > "$root/DEBIAN/conffiles"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$root/DEBIAN/"
mkdir -p "$outdir"
deb="$outdir/ocpp-gateway_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" --build "$root" "$deb" >/dev/null
echo "$deb"
