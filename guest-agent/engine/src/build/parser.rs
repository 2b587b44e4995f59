//! The Dockerfile's lines: directives, comments, continuations, heredocs,
//! each instruction with the line it starts on. A port of what BuildKit's
//! `frontend/dockerfile/parser` does (which the classic builder vendors),
//! hand-written because no crate parses with its exact rules (the design
//! brief, research/build.md 2.2): the keyword, its `--flags`, the rest.

/// One instruction as written, its continuations joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Upper-cased (keywords are case-insensitive).
    pub keyword: String,
    /// Leading `--name=value` words, as written.
    pub flags: Vec<String>,
    /// What follows the keyword and flags, trimmed.
    pub args: String,
    /// The whole instruction as written (continuations joined), for
    /// Step lines and ONBUILD.
    pub original: String,
    /// 1-based line the instruction starts on.
    pub line: usize,
    /// Here-documents the instruction opens, in order.
    pub heredocs: Vec<Heredoc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    pub content: String,
    /// Unquoted terminator: variables in the body are expanded.
    pub expand: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub instructions: Vec<Instruction>,
    pub escape: char,
    /// BuildKit's parser warnings (empty continuation lines).
    pub warnings: Vec<String>,
}

/// A parse error, worded as dockerd words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dockerfile parse error line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

fn error(line: usize, message: impl Into<String>) -> ParseError {
    ParseError { line, message: message.into() }
}

/// The instructions BuildKit's parser dispatches.
const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// `# key=value` at the top of the file; None for any other line.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?.trim();
    let (key, value) = rest.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some((key.to_ascii_lowercase(), value.trim().to_string()))
}

/// The line with a trailing escape token (and whitespace after it)
/// removed, or None when it does not continue.
fn continued(line: &str, escape: char) -> Option<&str> {
    let trimmed = line.trim_end_matches([' ', '\t']);
    trimmed.strip_suffix(escape)
}

pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let mut escape = '\\';
    let mut index = 0;
    // Directives: only in the first comment lines, each at most once.
    let mut seen = std::collections::HashSet::new();
    while index < lines.len() {
        let Some((key, value)) = directive(lines[index].trim_start()) else { break };
        if !seen.insert(key.clone()) {
            return Err(error(index + 1, format!("only one {key} parser directive can be used")));
        }
        if key == "escape" {
            escape = match value.as_str() {
                "`" => '`',
                "\\" => '\\',
                _ => return Err(error(index + 1, format!("invalid ESCAPE '{value}'. Must be ` or \\"))),
            };
        }
        index += 1;
    }
    let mut instructions = Vec::new();
    let mut warnings = Vec::new();
    while index < lines.len() {
        let start = index;
        let first = lines[index].trim_start();
        index += 1;
        if first.is_empty() || first.starts_with('#') {
            continue;
        }
        let mut joined = String::new();
        let mut current = first;
        let mut empty_continuation = false;
        loop {
            match continued(current, escape) {
                Some(part) => {
                    joined.push_str(part);
                    // The next line that is not a comment continues it.
                    loop {
                        if index >= lines.len() {
                            current = "";
                            break;
                        }
                        let next = lines[index];
                        index += 1;
                        if next.trim_start().starts_with('#') {
                            continue;
                        }
                        if next.trim().is_empty() {
                            empty_continuation = true;
                            continue;
                        }
                        current = next;
                        break;
                    }
                    if current.is_empty() {
                        break;
                    }
                }
                None => {
                    joined.push_str(current);
                    break;
                }
            }
        }
        let joined = joined.trim().to_string();
        if empty_continuation {
            warnings.push(format!("[WARNING]: Empty continuation line found in:\n    {joined}"));
        }
        let mut instruction = split_instruction(&joined, start + 1)?;
        if ["RUN", "COPY", "ADD"].contains(&instruction.keyword.as_str())
            || (instruction.keyword == "ONBUILD" && instruction.args.contains("<<"))
        {
            for (name, chomp, expand) in heredoc_markers(&instruction.args) {
                let mut content = String::new();
                loop {
                    if index >= lines.len() {
                        return Err(error(start + 1, format!("unterminated heredoc {name}")));
                    }
                    let body = lines[index];
                    index += 1;
                    let body = if chomp { body.trim_start_matches('\t') } else { body };
                    if body == name {
                        break;
                    }
                    content.push_str(body);
                    content.push('\n');
                }
                instruction.heredocs.push(Heredoc { name, content, expand });
            }
        }
        instructions.push(instruction);
    }
    Ok(Dockerfile { instructions, escape, warnings })
}

/// Keyword, flags and arguments of one joined instruction line.
fn split_instruction(line: &str, number: usize) -> Result<Instruction, ParseError> {
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let keyword = word.to_ascii_uppercase();
    if !KEYWORDS.contains(&keyword.as_str()) {
        return Err(error(number, format!("unknown instruction: {keyword}")));
    }
    let mut rest = rest.trim_start();
    let mut flags = Vec::new();
    while let Some(flag) = rest.strip_prefix("--") {
        if flag.is_empty() || flag.starts_with(char::is_whitespace) {
            break;
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        flags.push(rest[..end].to_string());
        rest = rest[end..].trim_start();
    }
    Ok(Instruction {
        keyword,
        flags,
        args: rest.trim().to_string(),
        original: line.to_string(),
        line: number,
        heredocs: Vec::new(),
    })
}

/// `<<EOF`, `<<-EOF`, `<<"EOF"` words: (terminator, strip tabs, expand).
fn heredoc_markers(args: &str) -> Vec<(String, bool, bool)> {
    let mut markers = Vec::new();
    for word in args.split_whitespace() {
        let Some(rest) = word.strip_prefix("<<") else { continue };
        if rest.starts_with('<') {
            continue; // `<<<` is a here-string, the shell's business
        }
        let (chomp, rest) = match rest.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        let quoted = (rest.starts_with('"') && rest.ends_with('"') && rest.len() >= 2)
            || (rest.starts_with('\'') && rest.ends_with('\'') && rest.len() >= 2);
        let name = if quoted { &rest[1..rest.len() - 1] } else { rest };
        // The redirect may continue the word (`<<EOF>file`): the name is the
        // leading word characters.
        let name: String = name.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !name.is_empty() {
            markers.push((name, chomp, !quoted));
        }
    }
    markers
}

/// `["a", "b"]`: the exec form's words, or None for the shell form.
pub fn json_array(args: &str) -> Option<Vec<String>> {
    if !args.trim_start().starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(args.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_comments_and_case() {
        let file =
            parse("# syntax=docker/dockerfile:1\nfrom busybox\n\nRUN echo a \\\n# comment\n    b\n  cmd [\"sh\"]\n")
                .unwrap();
        let got: Vec<_> = file.instructions.iter().map(|i| (i.keyword.as_str(), i.args.as_str(), i.line)).collect();
        assert_eq!(got, vec![("FROM", "busybox", 2), ("RUN", "echo a     b", 4), ("CMD", "[\"sh\"]", 7)]);
    }

    #[test]
    fn the_escape_directive_changes_the_continuation() {
        let file = parse("# escape=`\nFROM x\nRUN dir c:\\ `\n  /s\n").unwrap();
        assert_eq!(file.escape, '`');
        assert_eq!(file.instructions[1].args, "dir c:\\   /s");
        assert_eq!(
            parse("# escape=x\nFROM a").unwrap_err().to_string(),
            "dockerfile parse error line 1: invalid ESCAPE 'x'. Must be ` or \\"
        );
    }

    #[test]
    fn flags_are_split_off() {
        let file = parse("COPY --from=build --chown=1:2 /a /b\n").unwrap();
        assert_eq!(file.instructions[0].flags, vec!["--from=build", "--chown=1:2"]);
        assert_eq!(file.instructions[0].args, "/a /b");
    }

    #[test]
    fn unknown_instructions_name_their_line() {
        let err = parse("FROM a\n\nFOO bar\n").unwrap_err();
        assert_eq!(err.to_string(), "dockerfile parse error line 3: unknown instruction: FOO");
    }

    #[test]
    fn heredocs_collect_their_bodies() {
        let file =
            parse("FROM a\nRUN <<EOF\necho hi\necho there\nEOF\nCOPY <<-'X' /f\n\tliteral $A\n\tX\nCMD x\n").unwrap();
        let run = &file.instructions[1];
        assert_eq!(
            run.heredocs,
            vec![Heredoc { name: "EOF".into(), content: "echo hi\necho there\n".into(), expand: true }]
        );
        let copy = &file.instructions[2];
        assert_eq!(copy.heredocs[0].content, "literal $A\n");
        assert!(!copy.heredocs[0].expand);
        assert_eq!(file.instructions[3].keyword, "CMD");
        assert!(parse("RUN <<EOF\nnever ends\n").is_err());
    }

    #[test]
    fn empty_continuation_lines_warn() {
        let file = parse("RUN a \\\n\n b\n").unwrap();
        assert_eq!(file.instructions[0].args, "a  b");
        assert_eq!(file.warnings.len(), 1);
    }

    #[test]
    fn exec_form_is_a_json_string_array() {
        assert_eq!(json_array("[\"a\", \"b c\"]"), Some(vec!["a".into(), "b c".into()]));
        assert_eq!(json_array("echo [x]"), None);
        assert_eq!(json_array("[not json"), None);
    }
}
