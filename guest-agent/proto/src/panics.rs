//! What the agent's and the daemon's request handlers say when one of them
//! panics: the request fails, the process serves on.

use std::any::Any;

/// The text a `panic!` was given (a `&str` or a `String` payload).
pub fn message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_of_both_payload_kinds() {
        let text = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(super::message(&*text), "plain");
        let formatted = std::panic::catch_unwind(|| panic!("formatted {}", 1)).unwrap_err();
        assert_eq!(super::message(&*formatted), "formatted 1");
        let other = std::panic::catch_unwind(|| std::panic::panic_any(5)).unwrap_err();
        assert_eq!(super::message(&*other), "a panic without a message");
    }
}
