#!/usr/bin/env bash
# make-bundle.sh OUT KEY BOARD VERSION ROOTHASH DIR: the update bundle OUT from DIR's root.img,
# rackboot-a.efi and rackboot-b.efi, its manifest signed with the Ed25519 key KEY (PEM).
# The format (appliance/src/update/bundle.rs): an uncompressed tar whose members are, in this
# order, manifest.json, manifest.json.sig (the raw 64-byte Ed25519 signature of the manifest's
# exact bytes), then the payloads. Called by post-image.sh; the updater's tests call it too.
set -euo pipefail
[ $# -eq 6 ] || { echo "usage: $0 OUT KEY BOARD VERSION ROOTHASH DIR" >&2; exit 2; }
out=$1 key=$2 board=$3 version=$4 roothash=$5 dir=$6
for v in "$board" "$version" "$roothash"; do
	case "$v" in *'"'* | *'\'*) echo "make-bundle: no quotes or backslashes in names: $v" >&2; exit 2 ;; esac
done
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
files=""
for f in root.img rackboot-a.efi rackboot-b.efi; do
	cp "$dir/$f" "$stage/$f"
	files="$files${files:+,}{\"name\":\"$f\",\"size\":$(stat -c %s "$dir/$f"),\"sha256\":\"$(sha256sum "$dir/$f" | cut -c1-64)\"}"
done
printf '{"format":"rackboot-update/1","board":"%s","version":"%s","roothash":"%s","files":[%s]}\n' \
	"$board" "$version" "$roothash" "$files" >"$stage/manifest.json"
openssl pkeyutl -sign -inkey "$key" -rawin -in "$stage/manifest.json" -out "$stage/manifest.json.sig"
tar --format=gnu --owner=0 --group=0 --numeric-owner --mtime=@0 --mode=0644 -cf "$out" \
	-C "$stage" manifest.json manifest.json.sig root.img rackboot-a.efi rackboot-b.efi
