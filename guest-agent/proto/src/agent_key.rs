//! The per-boot key that admits a connection to the agent.
//!
//! The agent runs anything as root in the VM, and the VM has the user's
//! files mounted, so "who may connect" is the security boundary of Berth.
//! The peer check (only the host's vsock CID) keeps out everything inside
//! the VM; the key keeps out everything on the host that can reach the
//! socket but is not this Berth (another local user's process on a host
//! with kernel vsock, where any process can connect to any CID) and anything
//! in the VM that gets around the peer check.
//!
//! The host makes a fresh key for each boot and hands it to the guest where
//! nothing else can read it: in the VM, as a file in an extra cpio archive
//! appended to the initramfs (`AGENT_KEY_GUEST_PATH`), which the agent reads
//! and deletes before anything else runs (not the kernel command line: that
//! is in the host's process list and in every container's /proc/cmdline);
//! for a local agent, in its environment (`AGENT_KEY_ENV`, which the agent
//! removes at once). Every connection to the agent then starts with the
//! key's `AGENT_KEY_BYTES` raw bytes, before HTTP/2 starts.

use std::fmt;

/// The length of the key and of the preamble of every agent connection.
pub const AGENT_KEY_BYTES: usize = 32;

/// Where the agent finds the key in the VM's initial root filesystem.
pub const AGENT_KEY_GUEST_PATH: &str = "/berth-agent.key";

/// Where a local agent finds the key (hex).
pub const AGENT_KEY_ENV: &str = "BERTH_AGENT_KEY";

#[derive(Clone, PartialEq, Eq)]
pub struct AgentKey([u8; AGENT_KEY_BYTES]);

impl AgentKey {
    pub fn from_bytes(bytes: [u8; AGENT_KEY_BYTES]) -> Self {
        AgentKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; AGENT_KEY_BYTES] {
        &self.0
    }

    /// Reads a key written by `to_hex` (surrounding white space ignored).
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.trim().as_bytes();
        if text.len() != 2 * AGENT_KEY_BYTES {
            return None;
        }
        let mut bytes = [0u8; AGENT_KEY_BYTES];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            let digit = |c: u8| (c as char).to_digit(16);
            *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Some(AgentKey(bytes))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Compares in time that does not depend on where `presented` differs,
    /// so a caller cannot find the key byte by byte by timing refusals.
    pub fn admits(&self, presented: &[u8]) -> bool {
        if presented.len() != AGENT_KEY_BYTES {
            return false;
        }
        let difference = self.0.iter().zip(presented).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

/// Never prints the key itself (it ends up in logs through `{:?}`).
impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_admit_only_themselves() {
        let key = AgentKey::from_bytes(std::array::from_fn(|i| i as u8 * 7));
        let hex = key.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(AgentKey::from_hex(&format!(" {hex}\n")), Some(key.clone()));
        assert!(key.admits(key.as_bytes()));
        let mut other = *key.as_bytes();
        other[31] ^= 1;
        assert!(!key.admits(&other));
        assert!(!key.admits(&key.as_bytes()[..31]), "a short preamble");
        assert!(!key.admits(&[]));
        assert_eq!(AgentKey::from_hex("zz"), None);
        assert_eq!(AgentKey::from_hex(&"g".repeat(64)), None);
        assert_eq!(format!("{key:?}"), "AgentKey(..)");
    }
}
