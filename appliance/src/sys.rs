//! Process limits the services size themselves by (the open-files limit). Depends on nothing
//! of ours, so any capability may use it.
//!
//! Owns: the open-files limit. May call: nothing of ours.

/// Raises the soft open-files limit to the hard one: a boot storm holds many TFTP/HTTP sockets
/// and a subnet scan opens two per probed address, and systemd's default soft limit (1024)
/// would otherwise turn that into `EMFILE` errors.
pub fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            let want = hard.min(1 << 20);
            match setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
                Ok(()) => tracing::debug!(from = soft, to = want, "raised the open-files limit"),
                Err(e) => tracing::warn!(soft, error = %e, "could not raise the open-files limit"),
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the open-files limit"),
    }
}

/// The open-files soft limit now in force (`None` if unknown or unlimited).
pub fn open_files_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
        .filter(|s| *s != nix::sys::resource::RLIM_INFINITY)
}
