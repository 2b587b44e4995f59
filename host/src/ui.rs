//! What the CLI prints for people rather than for programs: `--quiet`
//! silences progress and confirmation lines (errors, warnings and the
//! output a command was asked for stay), and colour is used only on a
//! terminal and never under NO_COLOR (https://no-color.org).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);

pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// A progress or confirmation line on stdout, unless `--quiet`.
pub fn say(line: impl std::fmt::Display) {
    if !QUIET.load(Ordering::Relaxed) {
        println!("{line}");
    }
}

/// Whether a stream that is (or is not) a terminal gets colour.
pub fn color_for(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    // NO_COLOR set to anything but the empty string turns colour off.
    is_terminal && no_color.is_none_or(|value| value.is_empty())
}

pub fn stderr_color() -> bool {
    color_for(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref())
}

pub fn stdout_color() -> bool {
    color_for(std::io::stdout().is_terminal(), std::env::var_os("NO_COLOR").as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(color_for(true, None));
        assert!(!color_for(false, None));
        assert!(!color_for(true, Some("1".as_ref())));
        assert!(color_for(true, Some("".as_ref())), "an empty NO_COLOR does not count");
    }
}
