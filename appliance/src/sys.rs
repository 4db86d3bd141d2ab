//! Process limits the services size themselves by (the open-files limit), and telling the
//! service manager how the process is (systemd's `sd_notify`: READY, WATCHDOG, STOPPING; the
//! unit is `Type=notify` with `WatchdogSec`, deploy/systemd/rackboot.service). Depends on nothing
//! of ours, so any capability may use it.
//!
//! Owns: the open-files limit, service-manager notifications, the allocator's arena limit. May
//! call: nothing of ours.

use std::future::Future;
use std::time::Duration;

/// glibc malloc arenas rackboot uses at most, unless `MALLOC_ARENA_MAX` says otherwise.
pub const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`]; call first in `main`, before any thread.
///
/// glibc gives threads arenas of their own, up to 8 per core, and memory freed in one stays
/// there. rackboot's threads (two runtimes, the store writer, blocking reads) touched several:
/// in the 1,000-node storm bench the heap was 74 MiB with glibc's default and 40 MiB with two
/// arenas, and the storm was no slower (docs/benchmarks.md). `MALLOC_ARENA_MAX`, when set, wins.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a parameter of the allocator and is called before any other
        // thread exists; a failure (return 0) leaves glibc's default.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

/// Tells the service manager that rackboot is up (every listener bound, the store open), with a
/// one-line status. Without `NOTIFY_SOCKET` (not under systemd) this does nothing.
pub fn notify_ready(status: &str) {
    let status = format!("STATUS={status}");
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Custom(&status),
    ]);
}

/// Tells the service manager that rackboot is stopping (a graceful shutdown has begun).
pub fn notify_stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// When the service manager asked for watchdog pings (`WATCHDOG_USEC`, for this process's
/// PID), pings at half that interval for as long as `alive` answers true: `alive` is a probe
/// through the serving path (a store read), so a wedged store or a stalled runtime stops the
/// pings and systemd restarts rackboot. Returns at once when no watchdog is configured.
pub async fn watchdog<F, Fut>(alive: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (interval / 2).max(Duration::from_millis(100));
    tracing::info!(?interval, "systemd watchdog enabled");
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A probe that hangs counts as a miss: the next tick is not reached, no ping is sent.
        match tokio::time::timeout(interval, alive()).await {
            Ok(true) => notify(&[sd_notify::NotifyState::Watchdog]),
            Ok(false) => tracing::warn!("liveness probe failed; no watchdog ping"),
            Err(_) => tracing::warn!(?interval, "liveness probe hung; no watchdog ping"),
        }
    }
}

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
