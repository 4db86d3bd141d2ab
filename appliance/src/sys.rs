//! Process limits the services size themselves by (the open-files limit), and telling the
//! service manager how the process is (systemd's `sd_notify`: READY, WATCHDOG, STOPPING; the
//! unit is `Type=notify` with `WatchdogSec`, deploy/systemd/rackboot.service). Depends on nothing
//! of ours, so any capability may use it.
//!
//! Owns: the open-files limit, service-manager notifications, the allocator's arena limit and
//! heap trimming. May
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

/// How often [`return_free_heap`] gives freed heap pages back to the kernel.
pub const HEAP_TRIM_EVERY: Duration = Duration::from_secs(2);

/// Gives the pages glibc malloc holds free (freed memory between live allocations, which it
/// keeps for reuse) back to the kernel, every [`HEAP_TRIM_EVERY`], for ever. In the storm bench
/// a trim during the setup's API imports took the heap from 31 to 20 MiB: memory that was
/// free but still counted in RSS (docs/benchmarks.md). Does nothing on other C libraries.
pub async fn return_free_heap() {
    let mut tick = tokio::time::interval(HEAP_TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        trim_heap();
    }
}

/// One trim (see [`return_free_heap`]); true if memory was given back.
pub fn trim_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes the allocator's own locks and only releases memory that is
        // free; it is safe to call from any thread at any time.
        #[allow(unsafe_code)]
        let released = unsafe { libc::malloc_trim(0) };
        released == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
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

#[cfg(test)]
mod tests {
    fn anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// 64 MiB freed below a live allocation stays in the process (glibc keeps it for reuse,
    /// and cannot shrink the heap past the live block) until a trim gives it back.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_returns_memory_freed_under_a_live_allocation() {
        let blocks: Vec<Vec<u8>> = (0..16_384).map(|i| vec![(i % 251) as u8; 4000]).collect();
        let keep = vec![1u8; 4000];
        drop(blocks);
        let before = anon_kib();
        super::trim_heap();
        let after = anon_kib();
        assert!(
            before.saturating_sub(after) > 32 * 1024,
            "RssAnon {before} -> {after} KiB"
        );
        assert_eq!(keep.iter().map(|b| u64::from(*b)).sum::<u64>(), 4000);
    }
}
