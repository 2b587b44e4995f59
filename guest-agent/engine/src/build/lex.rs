//! Variable substitution in Dockerfile words, as BuildKit's `shell/lex.go`
//! does it: `$V`, `${V}`, `${V:-w}`, `${V:+w}`, `${V:?msg}` and their
//! colon-less forms; single quotes literal, double quotes expanding, the
//! escape token escaping; quotes removed from the result.

/// Looks a variable up (the build's environment and allowed args).
pub trait Lookup {
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Lookup for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: &'a dyn Lookup,
}

/// One word, expanded and unquoted.
pub fn expand(word: &str, env: &dyn Lookup, escape: char) -> Result<String, String> {
    let mut lexer = Lexer { chars: word.chars().collect(), pos: 0, escape, env };
    let words = lexer.process(None, false)?;
    Ok(words.concat())
}

/// Expanded and split on unquoted whitespace (EXPOSE's words).
pub fn expand_words(word: &str, env: &dyn Lookup, escape: char) -> Result<Vec<String>, String> {
    let mut lexer = Lexer { chars: word.chars().collect(), pos: 0, escape, env };
    Ok(lexer.process(None, true)?.into_iter().filter(|w| !w.is_empty()).collect())
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += 1;
        c
    }

    /// Up to `stop` (consumed) or the end; words split on whitespace when `split`.
    fn process(&mut self, stop: Option<char>, split: bool) -> Result<Vec<String>, String> {
        let mut words = vec![String::new()];
        let mut in_word = false;
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok(words);
            }
            if split && c.is_whitespace() {
                self.pos += 1;
                if in_word {
                    words.push(String::new());
                    in_word = false;
                }
                continue;
            }
            in_word = true;
            let current = words.last_mut().expect("never empty");
            match c {
                '\'' => {
                    self.pos += 1;
                    loop {
                        match self.next() {
                            Some('\'') => break,
                            Some(ch) => current.push(ch),
                            None => {
                                return Err("unexpected end of statement while looking for matching single-quote".into())
                            }
                        }
                    }
                }
                '"' => {
                    self.pos += 1;
                    loop {
                        match self.peek() {
                            None => {
                                return Err("unexpected end of statement while looking for matching double-quote".into())
                            }
                            Some('"') => {
                                self.pos += 1;
                                break;
                            }
                            Some('$') => {
                                self.pos += 1;
                                let value = self.dollar()?;
                                words.last_mut().expect("never empty").push_str(&value);
                            }
                            Some(ch) if ch == self.escape => {
                                self.pos += 1;
                                let current = words.last_mut().expect("never empty");
                                match self.next() {
                                    Some(n) if n == '"' || n == '$' || n == self.escape => current.push(n),
                                    Some(n) => {
                                        current.push(ch);
                                        current.push(n);
                                    }
                                    None => current.push(ch),
                                }
                            }
                            Some(ch) => {
                                self.pos += 1;
                                words.last_mut().expect("never empty").push(ch);
                            }
                        }
                    }
                }
                '$' => {
                    self.pos += 1;
                    let value = self.dollar()?;
                    if split {
                        // An unquoted value is split too, as the shell splits it.
                        let mut parts = value.split(char::is_whitespace);
                        words.last_mut().expect("never empty").push_str(parts.next().unwrap_or(""));
                        words.extend(parts.map(String::from));
                    } else {
                        words.last_mut().expect("never empty").push_str(&value);
                    }
                }
                ch if ch == self.escape => {
                    self.pos += 1;
                    match self.next() {
                        Some(n) => current.push(n),
                        None => current.push(ch),
                    }
                }
                ch => {
                    self.pos += 1;
                    current.push(ch);
                }
            }
        }
        match stop {
            Some(_) => Err("syntax error: missing '}'".into()),
            None => Ok(words),
        }
    }

    /// After a `$`: the variable's value (or the literal `$`).
    fn dollar(&mut self) -> Result<String, String> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                let name = self.name();
                if name.is_empty() {
                    return Err("bad substitution".into());
                }
                let value = self.env.get(&name);
                let colon = self.peek() == Some(':');
                if colon {
                    self.pos += 1;
                }
                let set = match &value {
                    Some(v) => !(colon && v.is_empty()),
                    None => false,
                };
                match self.next() {
                    Some('}') if !colon => Ok(value.unwrap_or_default()),
                    Some('-') => {
                        let word = self.process(Some('}'), false)?.concat();
                        Ok(if set { value.unwrap_or_default() } else { word })
                    }
                    Some('+') => {
                        let word = self.process(Some('}'), false)?.concat();
                        Ok(if set { word } else { String::new() })
                    }
                    Some('?') => {
                        let word = self.process(Some('}'), false)?.concat();
                        if set {
                            Ok(value.unwrap_or_default())
                        } else if word.is_empty() {
                            Err(format!("{name}: is not allowed to be unset"))
                        } else {
                            Err(format!("{name}: {word}"))
                        }
                    }
                    Some(other) => Err(format!("unsupported modifier ({other}) in substitution")),
                    None => Err("syntax error: missing '}'".into()),
                }
            }
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                let name = self.name();
                Ok(self.env.get(&name).unwrap_or_default())
            }
            _ => Ok("$".into()),
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek().filter(|c| c.is_ascii_alphanumeric() || *c == '_') {
            name.push(c);
            self.pos += 1;
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("a".into()),
            "EMPTY" => Some(String::new()),
            "SP" => Some("x y".into()),
            _ => None,
        }
    }

    fn ex(word: &str) -> String {
        expand(word, &env, '\\').unwrap()
    }

    #[test]
    fn substitution_forms() {
        assert_eq!(ex("$A/${A}b"), "a/ab");
        assert_eq!(ex("${NO:-x}|${EMPTY:-x}|${EMPTY-x}|${A:-x}"), "x|x||a");
        assert_eq!(ex("${A:+set}|${NO:+set}|${EMPTY:+set}|${EMPTY+set}"), "set|||set");
        assert_eq!(ex("${NO:-${A}}"), "a");
        assert_eq!(ex("$NO"), "");
        assert_eq!(ex("cost $5"), "cost ");
        assert_eq!(ex("a$"), "a$");
        assert_eq!(expand("${NO:?needed}", &env, '\\').unwrap_err(), "NO: needed");
        assert!(expand("${A", &env, '\\').is_err());
    }

    #[test]
    fn quoting_and_escapes() {
        assert_eq!(ex("'$A' \"$A\" \\$A"), "$A a $A");
        assert_eq!(ex("\"x \\\" \\y\""), "x \" \\y");
        assert_eq!(expand("`$A", &env, '`').unwrap(), "$A");
        assert!(expand("'open", &env, '\\').is_err());
    }

    #[test]
    fn words_split_outside_quotes() {
        assert_eq!(expand_words("80 \"443 x\"  $SP", &env, '\\').unwrap(), vec!["80", "443 x", "x", "y"]);
    }
}
