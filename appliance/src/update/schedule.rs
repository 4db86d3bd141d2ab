//! When to reboot into an installed update: `now`, `never` (the next reboot, whenever it comes),
//! or at a time the sysadmin chooses. A chosen time is kept with the pending update in the
//! state file, so it outlives the request that set it: the root updater (run by init) reboots
//! the appliance when it comes, and a restart of the updater keeps the appointment.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use super::state::State;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reboot {
    /// As soon as the slot is written.
    Now,
    /// Leave the running slot up: the new slot is tried at the next reboot, whenever it comes.
    Never,
    /// At this time (the updater reboots then).
    At(SystemTime),
}

/// The syntax, for errors and `--help`.
pub const SYNTAX: &str = "`now`, `never`, `at HH:MM` (the next such time, UTC), or `at <RFC 3339 time>` \
     (e.g. `at 2026-12-24T02:30:00Z`); the `at` is optional";

impl FromStr for Reboot {
    type Err = String;

    fn from_str(s: &str) -> Result<Reboot, String> {
        parse_at(s.trim(), SystemTime::now())
    }
}

/// Parses a reboot choice, `HH:MM` relative to `now`.
pub fn parse_at(s: &str, now: SystemTime) -> Result<Reboot, String> {
    let bad = || format!("reboot {s:?}: {SYNTAX}");
    match s {
        "now" => return Ok(Reboot::Now),
        "never" => return Ok(Reboot::Never),
        _ => {}
    }
    let t = s.strip_prefix("at").map_or(s, str::trim_start);
    if let Ok(at) = humantime::parse_rfc3339_weak(t) {
        return Ok(Reboot::At(at));
    }
    let (h, m) = t.split_once(':').ok_or_else(bad)?;
    let (h, m): (u64, u64) = match (h.parse(), m.parse()) {
        (Ok(h), Ok(m)) if h < 24 && m < 60 && h_m_digits(t) => (h, m),
        _ => return Err(bad()),
    };
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| bad())?
        .as_secs();
    let midnight = since_epoch - since_epoch % 86_400;
    let mut at = midnight + h * 3600 + m * 60;
    if at <= since_epoch {
        at += 86_400;
    }
    Ok(Reboot::At(SystemTime::UNIX_EPOCH + Duration::from_secs(at)))
}

/// `H:MM` or `HH:MM`, digits only.
fn h_m_digits(t: &str) -> bool {
    let ok =
        |p: &str, lo: usize| (lo..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    t.split_once(':').is_some_and(|(h, m)| ok(h, 1) && ok(m, 2))
}

impl fmt::Display for Reboot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reboot::Now => f.write_str("now"),
            Reboot::Never => f.write_str("never"),
            Reboot::At(t) => write!(f, "at {}", humantime::format_rfc3339_seconds(*t)),
        }
    }
}

impl Reboot {
    /// The time to keep in the state file, if any.
    pub fn at(self) -> Option<String> {
        match self {
            Reboot::At(t) => Some(humantime::format_rfc3339_seconds(t).to_string()),
            _ => None,
        }
    }
}

/// What the updater does about a scheduled reboot, given the state, the booted slot and now.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing scheduled (or the update is not waiting for its trial on this slot).
    Nothing,
    /// Look again after this long.
    Wait(Duration),
    /// Reboot now.
    Reboot,
}

/// Longest the updater sleeps before reading the state again (a new schedule may have come
/// through `rackboot appliance update`, which does not talk to the updater).
pub const POLL: Duration = Duration::from_secs(30);

pub fn due(st: &State, booted: super::install::Slot, now: SystemTime) -> Due {
    let Some(p) = &st.pending else {
        return Due::Nothing;
    };
    // Only an installed update that the running slot has not tried yet: never a reboot loop.
    if p.stage != "trial" || p.slot == booted || p.failed.is_some() {
        return Due::Nothing;
    }
    let Some(at) = p
        .reboot_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
    else {
        return Due::Nothing;
    };
    match at.duration_since(now) {
        Ok(left) if !left.is_zero() => Due::Wait(left.min(POLL)),
        _ => Due::Reboot,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::update::install::Slot;
    use crate::update::state::Pending;

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn reboot_choices_parse_and_bad_ones_say_the_syntax() {
        let now = at("2026-12-03T10:15:00Z");
        assert_eq!(parse_at("now", now), Ok(Reboot::Now));
        assert_eq!(parse_at("never", now), Ok(Reboot::Never));
        let later = Reboot::At(at("2026-12-03T22:30:00Z"));
        assert_eq!(parse_at("at 22:30", now), Ok(later));
        assert_eq!(parse_at("22:30", now), Ok(later));
        // Passed today: tomorrow.
        assert_eq!(
            parse_at("at 02:00", now),
            Ok(Reboot::At(at("2026-12-04T02:00:00Z")))
        );
        assert_eq!(
            parse_at("at 10:15", now),
            Ok(Reboot::At(at("2026-12-04T10:15:00Z")))
        );
        assert_eq!(
            parse_at("at 2026-12-24T02:30:00Z", now),
            Ok(Reboot::At(at("2026-12-24T02:30:00Z")))
        );
        assert_eq!(
            parse_at("2026-12-24T02:30:00Z", now),
            Ok(Reboot::At(at("2026-12-24T02:30:00Z")))
        );
        for bad in [
            "", "later", "at", "at 24:00", "at 7:5", "at 07:60", "at -1:00", "at +1:00", "at 1:2:3",
        ] {
            let e = parse_at(bad, now).unwrap_err();
            assert!(e.contains("`at HH:MM`"), "{bad}: {e}");
        }
        // What goes to the updater and into the state parses back to the same time.
        let shown = later.to_string();
        assert_eq!(shown, "at 2026-12-03T22:30:00Z");
        assert_eq!(parse_at(&shown, now), Ok(later));
        assert_eq!(later.at().as_deref(), Some("2026-12-03T22:30:00Z"));
        assert_eq!(Reboot::Now.at(), None);
    }

    #[test]
    fn the_updater_reboots_once_the_time_comes_and_only_into_an_untried_trial() {
        let now = at("2026-12-03T10:15:00Z");
        let pending = |stage: &str, reboot_at: Option<&str>| State {
            pending: Some(Pending {
                slot: Slot::B,
                version: "0.2.0".into(),
                stage: stage.into(),
                at: "2026-12-03T10:00:00Z".into(),
                failed: None,
                reboot_at: reboot_at.map(str::to_owned),
            }),
            ..State::default()
        };
        assert_eq!(due(&State::default(), Slot::A, now), Due::Nothing);
        assert_eq!(due(&pending("trial", None), Slot::A, now), Due::Nothing);
        assert_eq!(
            due(
                &pending("writing", Some("2026-12-03T10:00:00Z")),
                Slot::A,
                now
            ),
            Due::Nothing
        );
        assert_eq!(
            due(
                &pending("trial", Some("2026-12-03T10:15:10Z")),
                Slot::A,
                now
            ),
            Due::Wait(Duration::from_secs(10))
        );
        assert_eq!(
            due(
                &pending("trial", Some("2026-12-03T22:00:00Z")),
                Slot::A,
                now
            ),
            Due::Wait(POLL)
        );
        assert_eq!(
            due(
                &pending("trial", Some("2026-12-03T10:15:00Z")),
                Slot::A,
                now
            ),
            Due::Reboot
        );
        // Overdue (the updater was down): now.
        assert_eq!(
            due(
                &pending("trial", Some("2026-12-02T10:00:00Z")),
                Slot::A,
                now
            ),
            Due::Reboot
        );
        // Already running the trial slot, or the trial failed: never again.
        assert_eq!(
            due(
                &pending("trial", Some("2026-12-02T10:00:00Z")),
                Slot::B,
                now
            ),
            Due::Nothing
        );
        let mut failed = pending("trial", Some("2026-12-02T10:00:00Z"));
        if let Some(p) = failed.pending.as_mut() {
            p.failed = Some("health check failed".into());
        }
        assert_eq!(due(&failed, Slot::A, now), Due::Nothing);
    }
}
