#!/usr/bin/env bash
# Buildroot post-build: finishes output/target as the appliance's read-only root.
#   - the rackboot user (no login shell, no password) and the root account locked;
#   - /etc/shadow.base, from which boot writes /run/rackboot/shadow (a maintenance password
#     from rackboot.toml, or none);
#   - iPXE binaries rackboot serves, from RACKBOOT_IPXE_SRC (default: Debian's /usr/lib/ipxe);
#   - the CA bundle rackboot's HTTPS clients need (RACKBOOT_CA_BUNDLE, default the host's);
#   - RACKBOOT_HOST_TOOLS (offline build only): host binaries copied with their shared libraries,
#     standing in for Buildroot packages whose sources cannot be fetched offline (e2fsprogs,
#     gptfdisk, util-linux);
#   - mount points, and nothing a root needs only to build or to log in remotely.
set -euo pipefail
target=$1

# Users. The root fs is made in post-image from this tree, without Buildroot's makeusers
# (which runs under host-fakeroot), so the account lines are written here.
grep -q '^rackboot:' "$target/etc/group" || echo 'rackboot:x:900:' >>"$target/etc/group"
grep -q '^rackboot:' "$target/etc/passwd" ||
	echo 'rackboot:x:900:900:rackboot:/data/rackboot:/bin/false' >>"$target/etc/passwd"
# /etc/shadow stays a file here (Buildroot edits it on every `make`); post-image replaces it
# in the image with a link into /run, and S11accounts writes /run/rackboot/shadow from this copy.
sed -e 's/^root:[^:]*:/root:*:/' "$target/etc/shadow" >"$target/etc/shadow.base"
grep -q '^rackboot:' "$target/etc/shadow.base" || echo 'rackboot:!:19000:0:99999:7:::' >>"$target/etc/shadow.base"
chmod 0600 "$target/etc/shadow.base"

mkdir -p "$target/data" "$target/boot" "$target/usr/share/rackboot/ipxe"
ipxe_src=${RACKBOOT_IPXE_SRC:-/usr/lib/ipxe}
for f in undionly.kpxe snponly.efi ipxe.efi; do
	if [ -e "$ipxe_src/$f" ]; then
		install -m 0644 "$ipxe_src/$f" "$target/usr/share/rackboot/ipxe/$f"
	else
		echo "post-build: no $ipxe_src/$f (Debian package ipxe, or set RACKBOOT_IPXE_SRC)" >&2
		exit 1
	fi
done

# CA certificates: rackboot's HTTPS clients (upstream federation, external token issuers, Redfish
# with a CA bundle) load the system's roots and refuse to start without any. The production
# defconfig builds ca-certificates; the offline build copies the build host's bundle.
if [ ! -e "$target/etc/ssl/certs/ca-certificates.crt" ]; then
	install -D -m 0644 "${RACKBOOT_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" \
		"$target/etc/ssl/certs/ca-certificates.crt"
fi

# Offline stand-ins: each binary and the shared libraries it loads (same glibc as the sysroot).
for bin in ${RACKBOOT_HOST_TOOLS:-}; do
	install -D -m 0755 "$bin" "$target/usr/sbin/$(basename "$bin")"
	ldd "$bin" | awk '/=> \// { print $3 }' | while read -r lib; do
		name=$(basename "$lib")
		[ -e "$target/lib/$name" ] || [ -e "$target/usr/lib/$name" ] || install -m 0755 "$lib" "$target/usr/lib/$name"
	done
done
# Shared libraries rackboot links that no Buildroot package installed (the offline variant's
# libtss2 and libcrypto come with the external toolchain's sysroot), and the TPM transport
# libtss2 loads at run time (dlopen, so not in rackboot's NEEDED list).
staging=${STAGING_DIR:-$(dirname "$target")/staging}
have_lib() { [ -n "$(find "$target/lib" "$target/usr/lib" -name "$1" -print -quit 2>/dev/null)" ]; }
need_libs() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
copy_lib() {
	have_lib "$1" && return 0
	src=$(find "$staging/lib" "$staging/usr/lib" -name "$1" -print -quit 2>/dev/null)
	[ -n "$src" ] || return 0
	install -m 0755 "$(readlink -f "$src")" "$target/usr/lib/$1"
	for dep in $(need_libs "$target/usr/lib/$1"); do copy_lib "$dep"; done
}
if [ -e "$target/usr/bin/rackboot" ]; then
	for lib in $(need_libs "$target/usr/bin/rackboot"); do copy_lib "$lib"; done
	if readelf -d "$target/usr/bin/rackboot" | grep -q 'libtss2-tctildr'; then
		copy_lib libtss2-tcti-device.so.0
	fi
	for lib in $(need_libs "$target/usr/bin/rackboot"); do
		have_lib "$lib" || { echo "post-build: rackboot needs $lib, which the root does not have" >&2; exit 1; }
	done
fi

if [ -e "$target/usr/sbin/mke2fs" ] && [ ! -e "$target/usr/sbin/mkfs.ext4" ]; then
	ln -s mke2fs "$target/usr/sbin/mkfs.ext4"
fi

# Not in an appliance: ifupdown's network script (S20network configures the NICs from
# rackboot.toml), the skeleton's login-oriented profile pieces, headers and static libraries.
rm -f "$target/etc/init.d/S40network" "$target/etc/network/interfaces"
rm -rf "$target/usr/include" "$target/usr/share/man" "$target/usr/share/doc"
find "$target" -name '*.a' -delete
