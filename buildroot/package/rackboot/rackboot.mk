################################################################################
#
# rackboot
#
################################################################################

# The package is the rackboot workspace this BR2_EXTERNAL tree lives in, built by the build
# machine's cargo with Buildroot's cross compiler as linker and C compiler (aws-lc-sys and the
# bundled SQLite compile C). Buildroot's own Rust infrastructure (cargo-package) would need a
# vendored dependency tree; calling cargo directly keeps the workspace's lock file and registry.
RACKBOOT_VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' $(BR2_EXTERNAL_RACKBOOT_PATH)/../Cargo.toml | head -n1)
RACKBOOT_SITE = $(realpath $(BR2_EXTERNAL_RACKBOOT_PATH)/..)
RACKBOOT_SITE_METHOD = local
RACKBOOT_LICENSE = MIT or Apache-2.0
# A local site is rsynced like an override source directory: leave out build outputs (gigabytes),
# and delete what the workspace no longer has (a module moved from x.rs to x/mod.rs would
# otherwise leave both behind), except Buildroot's own bookkeeping files.
RACKBOOT_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude /target --exclude /build --exclude /.git \
	--exclude /fuzz/target --exclude /fuzz/corpus --exclude /fuzz/artifacts \
	--exclude '/.stamp_*' --exclude '/.files-list*' --exclude '/.applied_patches_list' \
	--delete

RACKBOOT_CARGO ?= cargo
# Kept outside the package's build directory, so `rackboot-rebuild` (which rsyncs the sources
# again) recompiles only what changed. Override it to share one cache between output dirs.
RACKBOOT_CARGO_TARGET_DIR ?= $(BUILD_DIR)/rackboot-cargo-target

ifeq ($(BR2_x86_64),y)
RACKBOOT_RUST_TARGET = x86_64-unknown-linux-gnu
RACKBOOT_RUST_TARGET_ENV = X86_64_UNKNOWN_LINUX_GNU
else
RACKBOOT_RUST_TARGET = aarch64-unknown-linux-gnu
RACKBOOT_RUST_TARGET_ENV = AARCH64_UNKNOWN_LINUX_GNU
endif

# Keys sealed to the TPM (the `tpm` feature): tss-esapi finds libtss2 with pkg-config in the
# staging directory, where tpm2-tss installs it, or where the external toolchain's sysroot
# (the offline variant's, Debian's multiarch layout) has it.
ifeq ($(BR2_PACKAGE_RACKBOOT_TPM),y)
RACKBOOT_FEATURES = --features tpm
ifeq ($(BR2_PACKAGE_TPM2_TSS),y)
RACKBOOT_DEPENDENCIES += host-pkgconf tpm2-tss
RACKBOOT_PKG_CONFIG = $(PKG_CONFIG_HOST_BINARY)
else
RACKBOOT_PKG_CONFIG = pkg-config
endif
endif
RACKBOOT_MULTIARCH = $(if $(BR2_x86_64),x86_64,aarch64)-linux-gnu

RACKBOOT_CARGO_ENV = \
	PKG_CONFIG="$(RACKBOOT_PKG_CONFIG)" \
	PKG_CONFIG_ALLOW_CROSS=1 \
	PKG_CONFIG_SYSROOT_DIR="$(STAGING_DIR)" \
	PKG_CONFIG_LIBDIR="$(STAGING_DIR)/usr/lib/pkgconfig:$(STAGING_DIR)/usr/share/pkgconfig:$(STAGING_DIR)/usr/lib/$(RACKBOOT_MULTIARCH)/pkgconfig" \
	CARGO_TARGET_DIR="$(RACKBOOT_CARGO_TARGET_DIR)" \
	CARGO_TARGET_$(RACKBOOT_RUST_TARGET_ENV)_LINKER="$(TARGET_CC)" \
	CC_$(subst -,_,$(RACKBOOT_RUST_TARGET))="$(TARGET_CC)" \
	CXX_$(subst -,_,$(RACKBOOT_RUST_TARGET))="$(TARGET_CXX)" \
	AR_$(subst -,_,$(RACKBOOT_RUST_TARGET))="$(TARGET_AR)"

# The workspace's `appliance` profile: release, optimised for size (opt-level s, fat LTO, one
# codegen unit, stripped). Without default features: the image leaves out `rackboot storm`, the
# load generator (run from another host; docs/appliance.md).
define RACKBOOT_BUILD_CMDS
	cd $(@D) && $(TARGET_MAKE_ENV) $(RACKBOOT_CARGO_ENV) \
		$(RACKBOOT_CARGO) build --profile appliance --no-default-features $(RACKBOOT_FEATURES) \
		-p appliance --bin rackboot --target $(RACKBOOT_RUST_TARGET)
endef

define RACKBOOT_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 \
		$(RACKBOOT_CARGO_TARGET_DIR)/$(RACKBOOT_RUST_TARGET)/appliance/rackboot \
		$(TARGET_DIR)/usr/bin/rackboot
endef

$(eval $(generic-package))
