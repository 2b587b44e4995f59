//! The VM's wall clock follows the host's.
//!
//! A VM's clock is only as good as what keeps it in step: the RTC gives
//! whole seconds at boot, and while the VM process is stopped (a laptop's
//! sleep, a debugger, SIGSTOP) the guest's time stands still, so it falls
//! behind by however long the pause lasted and never catches up by itself.
//! The host daemon measures the offset every few seconds ([`SyncClock`], a
//! read and then a correction); the agent corrects the guest clock the
//! least disruptive way that converges:
//! forward by stepping (programs see time jump as after a suspend), backward
//! by slewing while the error is small, so running containers do not see
//! time go back, and by stepping only when it is too large to slew.
//!
//! [`SyncClock`]: berth_agent_proto::agent_server::Agent::sync_clock

use std::time::Duration;

/// Below this the clocks agree: the request's own transit time is noise.
const IN_STEP: Duration = Duration::from_millis(10);
/// The most the guest may be ahead for a slew (adjtime(3) corrects 0.5 ms
/// per second, so 500 ms converge in under 17 minutes).
const MAX_SLEW: Duration = Duration::from_millis(500);

/// What to do about `offset`: the host's time minus the guest's, in ns.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Correction {
    None,
    Step(i64),
    Slew(i64),
}

impl Correction {
    pub fn name(self) -> &'static str {
        match self {
            Correction::None => "none",
            Correction::Step(_) => "stepped",
            Correction::Slew(_) => "slewed",
        }
    }
}

pub fn plan(offset_ns: i64) -> Correction {
    let magnitude = offset_ns.unsigned_abs();
    if magnitude < IN_STEP.as_nanos() as u64 {
        Correction::None
    } else if offset_ns > 0 || magnitude > MAX_SLEW.as_nanos() as u64 {
        Correction::Step(offset_ns)
    } else {
        Correction::Slew(offset_ns)
    }
}

/// The guest's wall clock, in ns since the epoch.
pub fn now_ns() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    now.as_nanos() as i64
}

/// Moves the guest clock by `offset_ns` (the host's time minus the
/// guest's), or not at all when they agree, and says what it did.
pub fn correct(offset_ns: i64) -> std::io::Result<Correction> {
    let correction = plan(offset_ns);
    match correction {
        Correction::None => {}
        Correction::Step(offset) => {
            let target = now_ns().saturating_add(offset);
            let ts = libc::timespec {
                tv_sec: target.div_euclid(1_000_000_000) as _,
                tv_nsec: target.rem_euclid(1_000_000_000) as _,
            };
            // SAFETY: clock_settime reads the timespec we own for the call.
            if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Correction::Slew(offset) => {
            let delta = libc::timeval {
                tv_sec: offset.div_euclid(1_000_000_000) as _,
                tv_usec: (offset.rem_euclid(1_000_000_000) / 1000) as _,
            };
            // SAFETY: adjtime reads the timeval we own; the old-delta out
            // pointer may be null.
            if unsafe { libc::adjtime(&delta, std::ptr::null_mut()) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(correction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_differences_are_left_alone() {
        assert_eq!(plan(0), Correction::None);
        assert_eq!(plan(9_000_000), Correction::None);
        assert_eq!(plan(-9_000_000), Correction::None);
    }

    #[test]
    fn a_guest_behind_steps_forward() {
        // After a 20 s pause the guest is 20 s behind.
        assert_eq!(plan(20_000_000_000), Correction::Step(20_000_000_000));
        assert_eq!(plan(50_000_000), Correction::Step(50_000_000));
    }

    #[test]
    fn a_guest_ahead_slews_back_unless_far_off() {
        assert_eq!(plan(-200_000_000), Correction::Slew(-200_000_000));
        assert_eq!(plan(-500_000_000), Correction::Slew(-500_000_000));
        assert_eq!(plan(-3_000_000_000), Correction::Step(-3_000_000_000));
    }

    #[test]
    fn extreme_offsets_do_not_overflow() {
        assert_eq!(plan(i64::MIN), Correction::Step(i64::MIN));
        assert_eq!(plan(i64::MAX), Correction::Step(i64::MAX));
    }
}
