#!/usr/bin/env bash
# Buildroot post-image: the appliance disk image, built from output/target with Debian/host tools
# (Buildroot's own rootfs step needs host-fakeroot, which the offline build cannot fetch).
#
#   root.img        squashfs of the root (+ kernel modules, rackboot's file capability) followed
#                   by its dm-verity hash tree; the root hash goes into the UKI's command line
#   initramfs       busybox + veritysetup + the disk/dm-verity/squashfs modules; opens the slot
#                   named on the command line and switches root
#   rackboot-a.efi  UKI (systemd-boot's EFI stub + kernel + initramfs + command line), signed
#                   with the Secure Boot db key
#   rackboot-b.efi  the same UKI for slot b (only its command line's rackboot.slot differs)
#   rackboot-appliance.img  GPT: esp, root-a, root-b (empty until the first update), data
#                   (empty: made on first boot)
#   rackboot-update.rbu  the update bundle: manifest.json (board, version, root hash, every
#                   payload's size and SHA-256), manifest.json.sig (Ed25519, the update key),
#                   root.img, rackboot-a.efi, rackboot-b.efi (appliance/src/update/bundle.rs)
#
# Inputs (environment):
#   RACKBOOT_KERNEL_ROOT  a directory holding boot/vmlinuz-* and lib/modules/<ver> (the offline
#                         build: Debian's unpacked linux-image); default: Buildroot's kernel
#   RACKBOOT_SB_DIR       Secure Boot keys (db.key, db.crt; PK/KEK certificates for enrolment);
#                         made here, with test keys, when absent. Default $BASE_DIR/secureboot.
#   RACKBOOT_UPDATE_KEY   the release's Ed25519 update signing key (PEM, `openssl genpkey
#                         -algorithm ed25519`); its public half is baked into the root as
#                         /etc/rackboot/update-keys/release.pub. Made here, as a TEST key, when
#                         absent. Default $RACKBOOT_SB_DIR/update.key.
#   RACKBOOT_EFI_STUB     default /usr/lib/systemd/boot/efi/linuxx64.efi.stub
#   RACKBOOT_CMDLINE_EXTRA  appended to the kernel command line
set -euo pipefail
: "${BINARIES_DIR:?run by Buildroot}" "${TARGET_DIR:?}" "${BUILD_DIR:?}" "${BASE_DIR:?}"
board=$(cd "$(dirname "$0")" && pwd)
work=$BUILD_DIR/rackboot-image
rm -rf "$work"
mkdir -p "$work"
stub=${RACKBOOT_EFI_STUB:-/usr/lib/systemd/boot/efi/linuxx64.efi.stub}
sb=${RACKBOOT_SB_DIR:-$BASE_DIR/secureboot}
for tool in mksquashfs veritysetup sbsign sgdisk mkfs.vfat mcopy mmd setcap objcopy depmod modprobe cpio openssl tar; do
	command -v "$tool" >/dev/null || { echo "post-image: $tool is missing (cargo xtask deps installs it)" >&2; exit 1; }
done
[ -e "$stub" ] || { echo "post-image: no EFI stub $stub (Debian: systemd-boot-efi)" >&2; exit 1; }

# Sizes (MiB). The whole image stays at or under 128 MiB; the data partition is made on first
# boot and its file system grows to the partition when a larger one is written. The ESP holds
# three UKIs (\EFI\BOOT\BOOTX64.EFI, slot a's, slot b's) and room for a fourth while an update
# writes one beside the old; a root slot holds about twice today's root image.
ESP_MB=64
ROOT_MB=24
DATA_MB=8

# --- kernel and modules -----------------------------------------------------------------------
kroot=$work/kernel
if [ -n "${RACKBOOT_KERNEL_ROOT:-}" ]; then
	mkdir -p "$kroot"
	cp -a "$RACKBOOT_KERNEL_ROOT/lib" "$kroot/"
	vmlinuz=$(ls "$RACKBOOT_KERNEL_ROOT"/boot/vmlinuz-* | head -n1)
else
	mkdir -p "$kroot/lib"
	cp -a "$TARGET_DIR/lib/modules" "$kroot/lib/"
	vmlinuz=$BINARIES_DIR/bzImage
fi
kver=$(ls "$kroot/lib/modules" | head -n1)
depmod -b "$kroot" "$kver"

# copy_modules DEST NAME...: NAME and its dependencies, uncompressed (busybox insmod reads plain
# .ko), in load order into DEST/lib/modules/<kver>/..., each relative path printed once.
copy_modules() {
	local dest=$1; shift
	for m in "$@"; do
		modprobe -d "$kroot" -S "$kver" -D "$m" 2>/dev/null | awk '$1 == "insmod" { print $2 }'
	done | awk '!seen[$0]++' | while read -r path; do
		rel=${path#"$kroot"/}
		out=$dest/${rel%.xz}; out=${out%.zst}
		mkdir -p "$(dirname "$out")"
		case "$path" in
		*.xz) xz -dc "$path" >"$out" ;;
		*.zst) zstd -dcq "$path" >"$out" ;;
		*) cp "$path" "$out" ;;
		esac
		echo "${rel#lib/modules/"$kver"/}"
	done
}

# --- root file system ---------------------------------------------------------------------------
rootfs=$work/rootfs
mkdir -p "$rootfs"
cp -a "$TARGET_DIR/." "$rootfs/"
rm -f "$rootfs/THIS_IS_NOT_YOUR_ROOT_FILESYSTEM"
# Accounts are locked in the image; S11accounts writes the real file at boot (post-build.sh).
rm -f "$rootfs/etc/shadow"
ln -s ../run/rackboot/shadow "$rootfs/etc/shadow"
rm -rf "$rootfs/lib/modules"
mods=$(grep -v '^#' "$TARGET_DIR/etc/modules" | grep -v '^$' | tr '\n' ' ')
# shellcheck disable=SC2086
copy_modules "$rootfs" $mods dm_mod dm_verity squashfs >/dev/null
cp "$kroot/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$rootfs/lib/modules/$kver/" 2>/dev/null || true
depmod -b "$rootfs" "$kver"
# rackboot's only privilege: binding ports below 1024 (DHCP 67, TFTP 69, HTTP 80, HTTPS 443).
setcap cap_net_bind_service=ep "$rootfs/usr/bin/rackboot"
# The update key the image trusts: bundles verify against this public key only.
update_key=${RACKBOOT_UPDATE_KEY:-$sb/update.key}
if [ ! -e "$update_key" ]; then
	echo "post-image: making a TEST update signing key $update_key (a site uses its release key: docs/appliance.md)"
	mkdir -p "$(dirname "$update_key")"
	(umask 077 && openssl genpkey -algorithm ed25519 -out "$update_key")
fi
mkdir -p "$rootfs/etc/rackboot/update-keys"
openssl pkey -in "$update_key" -pubout -out "$rootfs/etc/rackboot/update-keys/release.pub"
# root_image ROOTFS DIR: DIR/root.img, the squashfs of ROOTFS followed by its dm-verity hash tree;
# sets roothash and hashoffset.
root_image() {
	local tree=$1 dir=$2 squash_size salt
	mksquashfs "$tree" "$dir/root.squashfs" -comp xz -all-root -noappend -no-progress -quiet \
		-mkfs-time 0 -all-time 0 >/dev/null
	squash_size=$(stat -c %s "$dir/root.squashfs")
	hashoffset=$(( (squash_size + 4095) / 4096 * 4096 ))
	cp "$dir/root.squashfs" "$dir/root.img"
	truncate -s "$hashoffset" "$dir/root.img"
	salt=$(sha256sum "$dir/root.squashfs" | cut -c1-64)
	roothash=$(veritysetup format "$dir/root.img" "$dir/root.img" --hash-offset="$hashoffset" \
		--salt="$salt" --uuid=00000000-0000-4000-8000-000000000000 |
		awk '/^Root hash:/ { print $3 }')
	[ -n "$roothash" ] || { echo "post-image: veritysetup gave no root hash" >&2; exit 1; }
	[ "$(stat -c %s "$dir/root.img")" -le $((ROOT_MB * 1048576)) ] ||
		{ echo "post-image: root.img is larger than the ${ROOT_MB} MiB slot" >&2; exit 1; }
}
root_image "$rootfs" "$work"

# --- initramfs ----------------------------------------------------------------------------------
ird=$work/initramfs
mkdir -p "$ird"/{bin,sbin,dev,proc,sys,run,newroot,lib/modules,lib64,usr/lib}
install -m 0755 "$board/initramfs/init" "$ird/init"
install -m 0755 "$TARGET_DIR/bin/busybox" "$ird/bin/busybox"
for a in sh mount umount insmod mkdir sleep cat grep sed basename poweroff switch_root; do
	ln -s busybox "$ird/bin/$a"
done
# veritysetup: Buildroot's (production selects cryptsetup), else the build host's (offline).
verity_bin=$TARGET_DIR/usr/sbin/veritysetup
[ -x "$verity_bin" ] || verity_bin=$(command -v veritysetup)
install -m 0755 "$verity_bin" "$ird/sbin/veritysetup"
# Shared libraries: the target's copy when it has one (the libc the binaries were built
# against), else the build host's (the offline build's host veritysetup).
for bin in "$ird/bin/busybox" "$ird/sbin/veritysetup"; do
	ldd "$bin" 2>/dev/null | awk '/=> \// { print $3 }'
done | sort -u | while read -r lib; do
	name=$(basename "$lib")
	for cand in "$TARGET_DIR/lib/$name" "$TARGET_DIR/usr/lib/$name" "$lib"; do
		if [ -e "$cand" ]; then cp -L "$cand" "$ird/usr/lib/$name"; break; fi
	done
done
if [ -e "$TARGET_DIR/lib/ld-linux-x86-64.so.2" ]; then
	cp -L "$TARGET_DIR/lib/ld-linux-x86-64.so.2" "$ird/lib64/"
else
	cp -L /lib64/ld-linux-x86-64.so.2 "$ird/lib64/"
fi
copy_modules "$work/irdmods" virtio_pci virtio_blk virtio_scsi sd_mod ahci nvme dm_mod dm_verity squashfs \
	| while read -r rel; do
		mkdir -p "$ird/lib/modules/$(dirname "$rel")"
		cp "$work/irdmods/lib/modules/$kver/$rel" "$ird/lib/modules/$rel"
		echo "$rel"
	done >"$ird/lib/modules/load.order"
(cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc --quiet --reproducible | gzip -9n) >"$work/initramfs.cpio.gz"

# --- Secure Boot keys ------------------------------------------------------------------------------
if [ ! -e "$sb/db.key" ]; then
	echo "post-image: making TEST Secure Boot keys in $sb (a site uses its own: docs/appliance.md)"
	mkdir -p "$sb"
	chmod 0700 "$sb"
	for k in PK KEK db; do
		openssl req -new -x509 -newkey rsa:2048 -sha256 -days 3650 -nodes -subj "/CN=rackboot test $k/" \
			-keyout "$sb/$k.key" -out "$sb/$k.crt" 2>/dev/null
	done
	uuidgen 2>/dev/null >"$sb/owner.guid" || cat /proc/sys/kernel/random/uuid >"$sb/owner.guid"
fi

# --- UKIs ---------------------------------------------------------------------------------------
osrel=$TARGET_DIR/usr/lib/os-release
[ -e "$osrel" ] || osrel=$TARGET_DIR/etc/os-release
# ukis DIR: DIR/rackboot-{a,b}.efi, UKIs (systemd-boot's EFI stub + kernel + initramfs + command
# line) for the root image of $roothash, signed with the db key, and their unsigned forms. The
# slots' UKIs differ only in their signed command line's rackboot.slot.
ukis() {
	local dir=$1 slot
	cmdline="console=ttyS0,115200 lockdown=integrity module.sig_enforce=1 panic=0 rackboot.slot=a rackboot.roothash=$roothash rackboot.hashoffset=$hashoffset ${RACKBOOT_CMDLINE_EXTRA:-}"
	echo -n "$cmdline" >"$dir/cmdline"
	for slot in a b; do
		echo -n "${cmdline/rackboot.slot=a/rackboot.slot=$slot}" >"$dir/cmdline-$slot"
		objcopy \
			--add-section .osrel="$osrel" --change-section-vma .osrel=0x20000 \
			--add-section .cmdline="$dir/cmdline-$slot" --change-section-vma .cmdline=0x30000 \
			--add-section .linux="$vmlinuz" --change-section-vma .linux=0x2000000 \
			--add-section .initrd="$work/initramfs.cpio.gz" --change-section-vma .initrd=0x3000000 \
			"$stub" "$dir/rackboot-$slot.unsigned.efi"
		sbsign --key "$sb/db.key" --cert "$sb/db.crt" --output "$dir/rackboot-$slot.efi" \
			"$dir/rackboot-$slot.unsigned.efi" 2>/dev/null
	done
}
ukis "$work"

# --- update bundle --------------------------------------------------------------------------------
board_name=$(cat "$TARGET_DIR/etc/rackboot/board")
version=$("$TARGET_DIR/usr/bin/rackboot" --version | head -n1 | sed 's/^rackboot //; s/["\\]//g')
"$board/make-bundle.sh" "$work/rackboot-update.rbu" "$update_key" "$board_name" "$version" "$roothash" "$work"

# A bundle whose rackboot cannot run at all (RACKBOOT_TEST_BUNDLES=1, for the update tests):
# properly signed, its root's /usr/bin/rackboot a stand-in that fails, like a build for the
# wrong libc. Its trial boot must end in the previous slot, with the failure reported.
if [ "${RACKBOOT_TEST_BUNDLES:-}" = 1 ]; then
	(
		bad=$work/broken
		mkdir -p "$bad"
		cp -a "$rootfs" "$bad/rootfs"
		rm "$bad/rootfs/usr/bin/rackboot"
		printf '#!/bin/sh\necho "rackboot: this build is broken on purpose (test bundle)" >&2\nsleep 2\nexit 70\n' \
			>"$bad/rootfs/usr/bin/rackboot"
		chmod 0755 "$bad/rootfs/usr/bin/rackboot"
		root_image "$bad/rootfs" "$bad"
		ukis "$bad"
		"$board/make-bundle.sh" "$work/rackboot-update-broken.rbu" "$update_key" "$board_name" \
			"$version broken-test-build" "$roothash" "$bad"
		rm -rf "$bad"
	)
fi

# --- ESP and disk -------------------------------------------------------------------------------
uki_bytes=$(stat -c %s "$work/rackboot-a.efi")
[ $((4 * uki_bytes)) -le $((ESP_MB * 1048576 * 95 / 100)) ] ||
	{ echo "post-image: the ${ESP_MB} MiB ESP cannot hold four ${uki_bytes}-byte UKIs (updates need that)" >&2; exit 1; }
esp=$work/esp.img
rm -f "$esp"
mkfs.vfat -C -n RACKBOOT "$esp" $((ESP_MB * 1024)) >/dev/null
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/EFI/rackboot
mcopy -i "$esp" "$work/rackboot-a.efi" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$esp" "$work/rackboot-a.efi" ::/EFI/rackboot/rackboot-a.efi
mcopy -i "$esp" "$TARGET_DIR/etc/rackboot/rackboot.toml.default" ::/rackboot.toml

disk=$work/rackboot-appliance.img
total_mb=$((1 + ESP_MB + 2 * ROOT_MB + DATA_MB + 1))
rm -f "$disk"
truncate -s "${total_mb}M" "$disk"
sgdisk -o \
	-n 1:2048:+${ESP_MB}M -t 1:ef00 -c 1:esp \
	-n 2:0:+${ROOT_MB}M -t 2:4f68bce3-e8cd-4db1-96e7-fbcaf984b709 -c 2:root-a \
	-n 3:0:+${ROOT_MB}M -t 3:4f68bce3-e8cd-4db1-96e7-fbcaf984b709 -c 3:root-b \
	-n 4:0:0 -t 4:8300 -c 4:data "$disk" >/dev/null
start() { sgdisk -i "$1" "$disk" | awk '/^First sector:/ { print $3 }'; }
dd if="$esp" of="$disk" bs=512 seek="$(start 1)" conv=notrunc,sparse status=none
dd if="$work/root.img" of="$disk" bs=512 seek="$(start 2)" conv=notrunc,sparse status=none

for f in rackboot-appliance.img rackboot-a.efi rackboot-b.efi rackboot-a.unsigned.efi root.img initramfs.cpio.gz cmdline rackboot-update.rbu; do
	cp "$work/$f" "$BINARIES_DIR/$f"
done
rm -f "$BINARIES_DIR/rackboot-update-broken.rbu"
[ ! -e "$work/rackboot-update-broken.rbu" ] || cp "$work/rackboot-update-broken.rbu" "$BINARIES_DIR/"
mkdir -p "$BINARIES_DIR/secureboot"
cp "$sb"/{PK,KEK,db}.crt "$sb/owner.guid" "$BINARIES_DIR/secureboot/"
cp "$rootfs/etc/rackboot/update-keys/release.pub" "$BINARIES_DIR/update-key.pub"
{
	echo "roothash=$roothash"
	echo "hashoffset=$hashoffset"
	echo "root_slot_a_start_sector=$(start 2)"
	echo "kernel=$kver"
	echo "rackboot_bytes=$(stat -c %s "$TARGET_DIR/usr/bin/rackboot")"
	echo "uki_bytes=$(stat -c %s "$work/rackboot-a.efi")"
	echo "board=$board_name"
	echo "update_bundle_bytes=$(stat -c %s "$work/rackboot-update.rbu")"
	echo "root_img_bytes=$(stat -c %s "$work/root.img")"
	echo "disk_bytes=$(stat -c %s "$disk")"
} >"$BINARIES_DIR/appliance.env"
cat "$BINARIES_DIR/appliance.env"
