//! Container names (Docker's random ones and its naming rule) and signals.

/// A signal by name (`SIGTERM`, `TERM`, `term`) or number.
pub fn parse_signal(text: &str) -> Result<i32, String> {
    if let Ok(n) = text.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        return Err(format!("Invalid signal: {text}"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    name.parse::<nix::sys::signal::Signal>().map(|s| s as i32).map_err(|_| format!("Invalid signal: {text}"))
}

/// Docker's random names: adjective_surname.
pub fn random_name(random: u64) -> String {
    const LEFT: &[&str] = &[
        "admiring",
        "brave",
        "busy",
        "clever",
        "dazzling",
        "eager",
        "elegant",
        "focused",
        "gallant",
        "happy",
        "jolly",
        "keen",
        "loving",
        "modest",
        "nifty",
        "optimistic",
        "peaceful",
        "quirky",
        "relaxed",
        "serene",
        "sharp",
        "stoic",
        "tender",
        "upbeat",
        "vibrant",
        "wizardly",
        "youthful",
        "zealous",
    ];
    const RIGHT: &[&str] = &[
        "albattani",
        "babbage",
        "curie",
        "darwin",
        "einstein",
        "fermi",
        "galileo",
        "hopper",
        "hypatia",
        "johnson",
        "kepler",
        "lamarr",
        "lovelace",
        "meitner",
        "newton",
        "noether",
        "pasteur",
        "ritchie",
        "shannon",
        "tesla",
        "thompson",
        "turing",
        "wozniak",
        "yalow",
    ];
    let left = LEFT[(random % LEFT.len() as u64) as usize];
    let right = RIGHT[((random / 64) % RIGHT.len() as u64) as usize];
    format!("{left}_{right}")
}

/// Docker's rule for container names.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}
