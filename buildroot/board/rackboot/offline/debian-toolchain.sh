#!/usr/bin/env bash
# Makes a Buildroot "custom external toolchain" from the build machine's Debian gcc 12, so the
# offline build compiles no gcc (see ../../README.md). Usage: debian-toolchain.sh DEST
#
# DEST/bin holds x86_64-linux-gnu-{gcc,cpp,binutils} (gcc is a wrapper adding --sysroot),
# DEST/lib/gcc a copy of gcc 12's internals (gcc finds them relative to its
# own binary), DEST/sysroot Debian's libc packages unpacked (never installed on the host).
set -euo pipefail
dest=$1
triple=x86_64-linux-gnu
gccver=12
[ -x "/usr/bin/$triple-gcc-$gccver" ] || { echo "debian-toolchain: gcc-$gccver is not installed" >&2; exit 1; }
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"/{bin,lib/gcc/$triple,debs,sysroot}
cd "$dest.tmp"

cp "/usr/bin/$triple-gcc-$gccver" "bin/$triple-gcc.real"
cp "/usr/bin/$triple-cpp-$gccver" "bin/$triple-cpp.real"
cp -a "/usr/lib/gcc/$triple/$gccver" "lib/gcc/$triple/"
# Buildroot refuses a toolchain offering what the config did not ask for: no OpenMP, no C++.
rm -f lib/gcc/$triple/$gccver/libgomp* lib/gcc/$triple/$gccver/libstdc++* lib/gcc/$triple/$gccver/libsupc++*
rm -f lib/gcc/$triple/$gccver/cc1plus lib/gcc/$triple/$gccver/g++-mapper-server
for tool in gcc cpp; do
	cat > "bin/$triple-$tool" <<WRAP
#!/bin/sh
# Debian's gcc defaults to the host's / as sysroot; Buildroot needs a self-contained one.
here=\$(dirname "\$(readlink -f "\$0")")
exec "\$here/$triple-$tool.real" --sysroot="\$here/../sysroot" "\$@"
WRAP
	chmod 0755 "bin/$triple-$tool"
done
for tool in addr2line ar as ld ld.bfd nm objcopy objdump ranlib readelf size strings strip; do
	ln -s "/usr/bin/$triple-$tool" "bin/$triple-$tool"
done
for tool in gcc-ar gcc-nm gcc-ranlib; do
	ln -s "/usr/bin/$triple-$tool-$gccver" "bin/$triple-$tool"
done
# gcc calls `as` and `ld` by their plain names from its own dir or PATH; pin Debian's.
ln -s "/usr/bin/$triple-as" "lib/gcc/$triple/$gccver/as"
ln -s "/usr/bin/$triple-ld" "lib/gcc/$triple/$gccver/ld"

# libc, and libtss2 with the libcrypto it links: rackboot's `tpm` feature (keys sealed to the
# TPM) links them; post-build.sh copies the shared libraries into the root (Buildroot's
# tpm2-tss package builds them instead in the production variant).
pkgs="libc6 libc6-dev linux-libc-dev libgcc-s1 libcrypt1 libcrypt-dev
	libtss2-dev libtss2-esys-3.0.2-0 libtss2-mu0 libtss2-sys1 libtss2-tctildr0 libtss2-tcti-device0
	libtss2-rc0 libssl3"
# shellcheck disable=SC2086
(cd debs && apt-get download $pkgs >/dev/null || { apt-get update -q >/dev/null && apt-get download $pkgs; })
for deb in debs/*.deb; do dpkg-deb -x "$deb" sysroot; done
# Buildroot copies the libraries matching ld*.so.* from the sysroot: etc/ld.so.conf.d would match
# and end the copy with a bare `exit -1`. Neither is part of a toolchain sysroot.
rm -rf sysroot/etc sysroot/usr/share/gdb sysroot/usr/share/doc sysroot/usr/share/lintian debs
cd /
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "debian-toolchain: $dest"
