//! Keeps the VM's wall clock in step with the host's.
//!
//! The guest's clock stands still while the VM process is not scheduled
//! (host sleep, SIGSTOP) and starts from the RTC's whole seconds at boot;
//! nothing inside the VM can notice either. So the daemon measures the
//! offset right after boot and then every [`PERIOD`], NTP-style: it reads
//! the guest's clock, takes the midpoint of the round trip as the moment it
//! was read, and sends the correction (the agent decides how to apply it,
//! guest-agent/src/clock.rs). A reading whose round trip took longer than
//! [`MAX_ROUND_TRIP`] is discarded: the VM paused in between, so its
//! error is unknown. One small RPC every few seconds is the whole cost.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_agent_proto::agent_client::AgentClient;
use berth_agent_proto::SyncClockRequest;
use tonic::transport::Channel;

/// How long the guest may run on a stale clock after the VM resumes.
pub const PERIOD: Duration = Duration::from_secs(2);
/// The most a reading may take to count (its error is half of it).
const MAX_ROUND_TRIP: Duration = Duration::from_millis(50);
/// How soon a discarded reading is retried.
const RETRY: Duration = Duration::from_millis(200);
/// Offsets below this are not sent (the agent would leave them alone too,
/// guest-agent/src/clock.rs): an idle VM then wakes once per period, not twice.
const NEGLIGIBLE_NS: i64 = 5_000_000;

pub fn host_now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as i64
}

/// The host's time minus the guest's, given when the reading was sent and
/// answered (host clock) and what the guest's clock said.
pub fn offset_ns(sent: i64, answered: i64, guest: i64) -> i64 {
    (sent / 2 + answered / 2 + (sent % 2 + answered % 2) / 2).saturating_sub(guest)
}

pub async fn keep_guest_clock(mut agent: AgentClient<Channel>) {
    let mut failing = false;
    loop {
        let sent = host_now_ns();
        let started = Instant::now();
        let reading = agent.sync_clock(SyncClockRequest { correct_by_nanos: 0 }).await;
        let round_trip = started.elapsed();
        let answered = host_now_ns();
        let next = match reading {
            Ok(reading) if round_trip <= MAX_ROUND_TRIP => {
                failing = false;
                let offset = offset_ns(sent, answered, reading.into_inner().guest_unix_nanos);
                if offset.unsigned_abs() >= NEGLIGIBLE_NS as u64 {
                    correct(&mut agent, offset).await;
                }
                PERIOD
            }
            Ok(_) => RETRY,
            // Logged once per outage: the agent may be busy or restarting.
            Err(status) => {
                if !failing {
                    tracing::warn!(error = %status.message(), "could not read the VM's clock");
                    failing = true;
                }
                PERIOD
            }
        };
        tokio::time::sleep(next).await;
    }
}

async fn correct(agent: &mut AgentClient<Channel>, offset: i64) {
    match agent.sync_clock(SyncClockRequest { correct_by_nanos: offset }).await {
        Ok(answer) if answer.get_ref().correction != "none" => {
            tracing::info!(
                offset_ms = offset / 1_000_000,
                correction = answer.get_ref().correction,
                "the VM's clock was off"
            );
        }
        Ok(_) => {}
        Err(status) => tracing::warn!(error = %status.message(), "could not set the VM's clock"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_taken_at_the_round_trips_midpoint() {
        // Sent at 100, answered at 110: the guest read 95 at 105.
        assert_eq!(offset_ns(100, 110, 95), 10);
        assert_eq!(offset_ns(100, 110, 115), -10);
        assert_eq!(offset_ns(101, 110, 105), 0);
    }

    #[test]
    fn far_apart_clocks_do_not_overflow() {
        assert_eq!(offset_ns(i64::MAX, i64::MAX, i64::MIN), i64::MAX);
        assert_eq!(offset_ns(0, 0, i64::MAX), -i64::MAX);
    }
}
