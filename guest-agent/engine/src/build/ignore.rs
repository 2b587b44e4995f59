//! `.dockerignore` with moby's rules (`moby/patternmatcher` and
//! `ignorefile`): patterns anchored at the context root, `*`/`?` not
//! crossing `/`, `**` any number of segments, `!` re-including, the last
//! match winning, a path excluded when it or a parent matches. The
//! `ignore` crate is not used: gitignore's rules differ (unanchored names,
//! directory-only patterns), and moby's are a small regex translation.

use regex::Regex;

struct Pattern {
    regex: Regex,
    exclusion: bool,
}

pub struct Matcher {
    patterns: Vec<Pattern>,
}

/// Go's `filepath.Clean` on a slash path, without a leading `/`.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

/// The patterns of a `.dockerignore` (`ignorefile.ReadAll`).
pub fn read_patterns(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut patterns = Vec::new();
    for line in text.lines() {
        // A comment only when `#` is the first byte, before trimming.
        if line.starts_with('#') {
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (bang, body) = match line.strip_prefix('!') {
            Some(rest) => ("!", rest.trim()),
            None => ("", line),
        };
        let cleaned = clean(body);
        patterns.push(format!("{bang}{}", if cleaned.is_empty() { ".".into() } else { cleaned }));
    }
    patterns
}

/// The regex of a pattern; `**` is special only for `.dockerignore`
/// (COPY's wildcards are Go's `filepath.Match`).
pub(super) fn translate(pattern: &str, double_star: bool) -> Result<Regex, String> {
    let mut out = String::from("^");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if double_star && chars.get(i + 1) == Some(&'*') => {
                i += 1;
                if chars.get(i + 1) == Some(&'/') {
                    i += 1;
                }
                if i + 1 >= chars.len() {
                    out.push_str(".*");
                } else {
                    out.push_str("(.*/)?");
                }
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '\\' => {
                i += 1;
                match chars.get(i) {
                    Some(next) => out.push_str(&regex::escape(&next.to_string())),
                    None => return Err(format!("syntax error in pattern {pattern:?}")),
                }
            }
            '[' => {
                // A class passes through; `\` inside escapes as in Go.
                let end = chars[i..].iter().position(|&c| c == ']').map(|p| p + i);
                let Some(end) = end else { return Err(format!("syntax error in pattern {pattern:?}")) };
                let body: String = chars[i + 1..end].iter().collect();
                let body = body.strip_prefix('^').map(|b| format!("^{b}")).unwrap_or(body);
                out.push('[');
                out.push_str(&body.replace('!', "^"));
                out.push(']');
                i = end;
            }
            other => out.push_str(&regex::escape(&other.to_string())),
        }
        i += 1;
    }
    out.push('$');
    Regex::new(&out).map_err(|e| format!("syntax error in pattern {pattern:?}: {e}"))
}

impl Matcher {
    pub fn new(patterns: &[String]) -> Result<Matcher, String> {
        let mut compiled = Vec::new();
        for pattern in patterns {
            let (exclusion, body) = match pattern.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, pattern.as_str()),
            };
            if body.is_empty() {
                return Err("illegal exclusion pattern: \"!\"".into());
            }
            compiled.push(Pattern { regex: translate(&clean(body), true)?, exclusion });
        }
        Ok(Matcher { patterns: compiled })
    }

    /// Whether `path` (relative to the context root) is ignored: the last
    /// pattern matching it or one of its parent directories decides.
    pub fn matches(&self, path: &str) -> bool {
        let path = clean(path);
        let parents: Vec<&str> = path.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue; // cannot change the outcome
            }
            let mut hit = pattern.regex.is_match(&path);
            if !hit {
                for end in 1..parents.len() {
                    if pattern.regex.is_match(&parents[..end].join("/")) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignored(patterns: &str, path: &str) -> bool {
        Matcher::new(&read_patterns(patterns)).unwrap().matches(path)
    }

    #[test]
    fn anchored_at_the_root_unlike_gitignore() {
        assert!(ignored("foo", "foo"));
        assert!(!ignored("foo", "a/foo"));
        assert!(ignored("**/foo", "a/b/foo"));
        assert!(ignored("**/foo", "foo"));
    }

    #[test]
    fn stars_and_parents() {
        assert!(ignored("*.md", "README.md"));
        assert!(!ignored("*.md", "docs/x.md"));
        assert!(ignored("docs", "docs/a/b.txt"));
        assert!(ignored("docs/", "docs/a"));
        assert!(ignored("a/**", "a/b/c"));
        assert!(ignored("a?c", "abc"));
        assert!(ignored("[a-c]x", "bx"));
    }

    #[test]
    fn exclusions_and_the_last_match() {
        assert!(!ignored("*.txt\n!keep.txt", "keep.txt"));
        assert!(ignored("*.txt\n!keep.txt", "drop.txt"));
        assert!(ignored("!keep.txt\n*.txt", "keep.txt"));
        assert!(!ignored("! spaced", "spaced"));
    }

    #[test]
    fn the_file_format() {
        assert_eq!(read_patterns("\u{feff}# c\n  \n /a/b/ \n #x\n!./c\n"), vec!["a/b", "#x", "!c"]);
        assert!(ignored(" #x\n", "#x"));
        assert!(!ignored("#x\n", "#x"));
    }
}
