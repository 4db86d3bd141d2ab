//! Boot-file policy: filled in by the boot-policy work.
