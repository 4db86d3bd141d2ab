# The maintenance console's shell: `rackboot` commands seal keys they write to the TPM, as the
# service does (docs/appliance.md).
export RACKBOOT_TPM=auto
