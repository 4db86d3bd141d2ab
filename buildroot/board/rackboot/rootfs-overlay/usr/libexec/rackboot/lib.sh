# Shared by the appliance's init scripts. Sourced, not run.

# boot.env, written by the initramfs: BOOT_DISK, BOOT_SLOT, ESP_DEV, DATA_DEV.
[ -r /run/rackboot/boot.env ] && . /run/rackboot/boot.env

# rackboot seals its private keys to the TPM when the machine has one (docs/appliance.md).
export RACKBOOT_TPM=auto

CONFIG=/boot/rackboot.toml
RUNCONF=/run/rackboot/rackboot.toml

# appliance_key KEY DEFAULT: a `key = "value"` line of the [appliance] table of rackboot.toml.
appliance_key() {
	v=""
	if [ -r "$CONFIG" ]; then
		v=$(awk -v key="$1" '
			/^[ \t]*\[/ { inapp = ($0 ~ /^[ \t]*\[appliance\][ \t]*$/); next }
			inapp {
				line = $0; sub(/#.*/, "", line)
				if (match(line, "^[ \t]*" key "[ \t]*=")) {
					val = substr(line, RLENGTH + 1)
					gsub(/^[ \t]*"?|"?[ \t]*$/, "", val)
					print val; exit
				}
			}' "$CONFIG")
	fi
	[ -n "$v" ] && echo "$v" || echo "$2"
}

log() { echo "rackboot-appliance: $*" >/dev/console; }
