//! The Dockerfile's stages and commands: each instruction's arguments
//! parsed as BuildKit's `line_parsers.go` and `instructions/parse.go`
//! parse them, before any variable is expanded (that happens when a step
//! runs, with the environment of that moment).

use super::parser::{json_array, Dockerfile, Heredoc, Instruction, ParseError};

/// The exec form (`["a","b"]`) or the shell form (run by SHELL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdLine {
    Exec(Vec<String>),
    Shell(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    pub sources: Vec<String>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    /// ADD: local tars are extracted, URLs fetched.
    pub add: bool,
    /// `COPY <<EOF /dest`: files made from here-documents.
    pub inline: Vec<Heredoc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `NONE`, or `CMD` with a command.
    pub test: Option<CmdLine>,
    pub flags: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run {
        cmd: CmdLine,
        heredocs: Vec<Heredoc>,
        mounts: Vec<super::mounts::RunMount>,
        /// `--network`: default, none or host (the build's own otherwise).
        network: Option<String>,
    },
    Copy(CopySpec),
    /// Raw `key`, raw `value` (expanded when the step runs).
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Arg(Vec<(String, Option<String>)>),
    Workdir(String),
    User(String),
    Expose(String),
    Volume(Vec<String>),
    Entrypoint(CmdLine),
    Cmd(CmdLine),
    Healthcheck(Health),
    Shell(Vec<String>),
    Onbuild(String),
    Stopsignal(String),
    Maintainer(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub instruction: Instruction,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Lower-cased `AS` name.
    pub name: Option<String>,
    /// The image, earlier stage or `scratch` (meta args not yet expanded).
    pub base: String,
    pub platform: Option<String>,
    pub from: Instruction,
    pub steps: Vec<Step>,
}

/// An ARG's name and default.
pub type NamedArg = (String, Option<String>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// ARGs before the first FROM: usable in FROM lines.
    pub meta_args: Vec<(Instruction, Vec<NamedArg>)>,
    pub stages: Vec<Stage>,
    pub escape: char,
}

fn error(instruction: &Instruction, message: impl Into<String>) -> ParseError {
    ParseError { line: instruction.line, message: message.into() }
}

/// Words split on whitespace outside quotes, quotes kept (BuildKit's parseWords).
pub fn words_keeping_quotes(text: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            word.push(c);
            escaped = false;
            continue;
        }
        match quote {
            Some(q) => {
                if c == escape && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                word.push(c);
            }
            None if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            None => {
                if c == escape {
                    escaped = true;
                } else if c == '"' || c == '\'' {
                    quote = Some(c);
                }
                word.push(c);
            }
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// `k=v k2="v 2"` or the legacy `k v with spaces` (ENV, LABEL).
fn name_values(instruction: &Instruction, escape: char) -> Result<Vec<(String, String)>, ParseError> {
    let keyword = instruction.keyword.as_str();
    let words = words_keeping_quotes(&instruction.args, escape);
    if words.is_empty() {
        return Err(error(instruction, format!("{keyword} requires at least one argument")));
    }
    if !words[0].contains('=') {
        let key = words[0].clone();
        let value = instruction.args.trim_start()[key.len()..].trim().to_string();
        if value.is_empty() {
            return Err(error(instruction, format!("{keyword} must have two arguments")));
        }
        return Ok(vec![(key, value)]);
    }
    words
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(error(
                instruction,
                format!("Syntax error - can't find = in \"{word}\". Must be of the form: name=value"),
            )),
        })
        .collect()
}

fn cmd_line(args: &str) -> CmdLine {
    match json_array(args) {
        Some(words) => CmdLine::Exec(words),
        None => CmdLine::Shell(args.to_string()),
    }
}

/// `--name=value` flags the instruction takes; an unknown one is refused.
fn flags(instruction: &Instruction, allowed: &[&str]) -> Result<Vec<(String, String)>, ParseError> {
    let mut out = Vec::new();
    for flag in &instruction.flags {
        let body = flag.trim_start_matches('-');
        let (name, value) = body.split_once('=').unwrap_or((body, ""));
        if !allowed.contains(&name) {
            return Err(error(instruction, format!("unknown flag: {name}")));
        }
        out.push((name.to_string(), value.to_string()));
    }
    Ok(out)
}

fn flag(flags: &[(String, String)], name: &str) -> Option<String> {
    flags.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.clone())
}

pub fn args_of(instruction: &Instruction) -> Result<Vec<(String, Option<String>)>, ParseError> {
    let words = words_keeping_quotes(&instruction.args, '\\');
    if words.is_empty() {
        return Err(error(instruction, "ARG requires at least one argument"));
    }
    Ok(words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (w, None),
        })
        .collect())
}

fn command(instruction: &Instruction, escape: char) -> Result<Command, ParseError> {
    let args = instruction.args.as_str();
    let keyword = instruction.keyword.as_str();
    let needs_args = |what: &str| -> Result<(), ParseError> {
        if args.is_empty() {
            Err(error(instruction, format!("{what} requires at least one argument")))
        } else {
            Ok(())
        }
    };
    let no_flags = || flags(instruction, &[]);
    Ok(match keyword {
        "RUN" => {
            let mut mounts = Vec::new();
            let mut network = None;
            for (name, value) in flags(instruction, &["mount", "network", "security"])? {
                match name.as_str() {
                    "mount" => {
                        let kind = value.split(',').find_map(|p| p.strip_prefix("type=")).unwrap_or("bind");
                        if kind == "secret" || kind == "ssh" {
                            return Err(error(
                                instruction,
                                format!("RUN --mount=type={kind} needs a BuildKit session, which the classic builder API (POST /build) cannot carry"),
                            ));
                        }
                        mounts.push(super::mounts::parse(&value).map_err(|m| error(instruction, m))?);
                    }
                    "network" => match value.as_str() {
                        "default" | "none" | "host" => network = Some(value),
                        other => return Err(error(instruction, format!("unsupported network mode \"{other}\""))),
                    },
                    // `insecure` needs an entitlement the legacy API cannot grant.
                    _ if value == "sandbox" => {}
                    _ => {
                        return Err(error(
                            instruction,
                            format!("RUN --security={value} needs a BuildKit entitlement, which the classic builder API (POST /build) cannot carry"),
                        ))
                    }
                }
            }
            needs_args("RUN")?;
            Command::Run { cmd: cmd_line(args), heredocs: instruction.heredocs.clone(), mounts, network }
        }
        "COPY" | "ADD" => {
            let add = keyword == "ADD";
            let allowed: &[&str] = if add { &["chown", "chmod", "link"] } else { &["from", "chown", "chmod", "link"] };
            let flags = flags(instruction, allowed)?;
            let mut words = match json_array(args) {
                Some(words) => words,
                None => words_keeping_quotes(args, escape),
            };
            let inline: Vec<Heredoc> = instruction.heredocs.clone();
            // The heredoc markers are sources made of the documents.
            words.retain(|w| !w.starts_with("<<"));
            if words.is_empty() || (words.len() < 2 && inline.is_empty()) {
                return Err(error(instruction, format!("{keyword} requires at least two arguments")));
            }
            let dest = words.pop().expect("checked above");
            Command::Copy(CopySpec {
                sources: words,
                dest,
                from: flag(&flags, "from"),
                chown: flag(&flags, "chown").filter(|v| !v.is_empty()),
                chmod: flag(&flags, "chmod").filter(|v| !v.is_empty()),
                add,
                inline,
            })
        }
        "ENV" => {
            no_flags()?;
            Command::Env(name_values(instruction, escape)?)
        }
        "LABEL" => {
            no_flags()?;
            Command::Label(name_values(instruction, escape)?)
        }
        "ARG" => {
            no_flags()?;
            Command::Arg(args_of(instruction)?)
        }
        "WORKDIR" => {
            no_flags()?;
            needs_args("WORKDIR")?;
            Command::Workdir(args.to_string())
        }
        "USER" => {
            no_flags()?;
            needs_args("USER")?;
            Command::User(args.to_string())
        }
        "EXPOSE" => {
            no_flags()?;
            needs_args("EXPOSE")?;
            Command::Expose(args.to_string())
        }
        "VOLUME" => {
            no_flags()?;
            let volumes = match json_array(args) {
                Some(v) => v,
                None => args.split_whitespace().map(String::from).collect(),
            };
            if volumes.is_empty() || volumes.iter().any(|v| v.trim().is_empty()) {
                return Err(error(instruction, "VOLUME specified can not be an empty string"));
            }
            Command::Volume(volumes)
        }
        "ENTRYPOINT" => {
            no_flags()?;
            Command::Entrypoint(cmd_line(args))
        }
        "CMD" => {
            no_flags()?;
            Command::Cmd(cmd_line(args))
        }
        "SHELL" => {
            no_flags()?;
            match json_array(args) {
                Some(words) if !words.is_empty() => Command::Shell(words),
                _ => return Err(error(instruction, "SHELL requires the arguments to be in JSON form")),
            }
        }
        "HEALTHCHECK" => {
            let flags = flags(instruction, &["interval", "timeout", "start-period", "start-interval", "retries"])?;
            let (kind, rest) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
            match kind.to_ascii_uppercase().as_str() {
                "NONE" => {
                    if !rest.trim().is_empty() || !flags.is_empty() {
                        return Err(error(instruction, "HEALTHCHECK NONE takes no arguments"));
                    }
                    Command::Healthcheck(Health { test: None, flags })
                }
                "CMD" if !rest.trim().is_empty() => {
                    Command::Healthcheck(Health { test: Some(cmd_line(rest.trim())), flags })
                }
                _ => return Err(error(instruction, "Unknown type \"\" in HEALTHCHECK (try CMD)")),
            }
        }
        "ONBUILD" => {
            no_flags()?;
            let trigger = args.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
            match trigger.as_str() {
                "" => return Err(error(instruction, "ONBUILD requires at least one argument")),
                "ONBUILD" => return Err(error(instruction, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")),
                "FROM" | "MAINTAINER" => {
                    return Err(error(instruction, format!("{trigger} isn't allowed as an ONBUILD trigger")))
                }
                _ => Command::Onbuild(args.to_string()),
            }
        }
        "STOPSIGNAL" => {
            no_flags()?;
            needs_args("STOPSIGNAL")?;
            Command::Stopsignal(args.to_string())
        }
        "MAINTAINER" => {
            no_flags()?;
            needs_args("MAINTAINER")?;
            Command::Maintainer(args.to_string())
        }
        other => return Err(error(instruction, format!("unknown instruction: {other}"))),
    })
}

/// Stage names: lower-cased, `^[a-z][a-z0-9-_.]*$`.
fn stage_name(instruction: &Instruction, name: &str) -> Result<String, ParseError> {
    let name = name.to_ascii_lowercase();
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if !valid {
        return Err(error(
            instruction,
            format!("invalid name for build stage: \"{name}\", name can't start with a number or contain symbols"),
        ));
    }
    Ok(name)
}

/// One command parsed on its own (ONBUILD triggers run as commands).
pub fn parse_command(instruction: &Instruction, escape: char) -> Result<Command, ParseError> {
    command(instruction, escape)
}

pub fn parse(file: &Dockerfile) -> Result<Build, ParseError> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in &file.instructions {
        if instruction.keyword == "FROM" {
            let from_flags = flags(instruction, &["platform"])?;
            let words: Vec<&str> = instruction.args.split_whitespace().collect();
            let (base, name) = match words.as_slice() {
                [base] => (base.to_string(), None),
                [base, as_, name] if as_.eq_ignore_ascii_case("as") => {
                    (base.to_string(), Some(stage_name(instruction, name)?))
                }
                _ => return Err(error(instruction, "FROM requires either one or three arguments")),
            };
            if let Some(name) = &name {
                if stages.iter().any(|s| s.name.as_ref() == Some(name)) {
                    return Err(error(instruction, format!("duplicate name {name}")));
                }
            }
            stages.push(Stage {
                name,
                base,
                platform: flag(&from_flags, "platform"),
                from: instruction.clone(),
                steps: Vec::new(),
            });
            continue;
        }
        let command = command(instruction, file.escape)?;
        match stages.last_mut() {
            Some(stage) => stage.steps.push(Step { instruction: instruction.clone(), command }),
            None => match command {
                Command::Arg(args) => meta_args.push((instruction.clone(), args)),
                _ => return Err(error(instruction, "no build stage in current context")),
            },
        }
    }
    if stages.is_empty() {
        return Err(ParseError { line: 0, message: "file with no instructions".into() });
    }
    Ok(Build { meta_args, stages, escape: file.escape })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::parser;

    fn build(text: &str) -> Result<Build, ParseError> {
        parse(&parser::parse(text)?)
    }

    #[test]
    fn stages_meta_args_and_commands() {
        let b = build("ARG V=1\nFROM busybox:$V AS Base\nENV A=1 B=\"two words\"\nENV LEGACY some value\nFROM base\nCOPY --from=base /a /b/\nCMD [\"sh\"]\n").unwrap();
        assert_eq!(b.meta_args[0].1, vec![("V".to_string(), Some("1".to_string()))]);
        assert_eq!(b.stages[0].name.as_deref(), Some("base"));
        assert_eq!(
            b.stages[0].steps[0].command,
            Command::Env(vec![("A".into(), "1".into()), ("B".into(), "\"two words\"".into())])
        );
        assert_eq!(b.stages[0].steps[1].command, Command::Env(vec![("LEGACY".into(), "some value".into())]));
        let Command::Copy(copy) = &b.stages[1].steps[0].command else { panic!() };
        assert_eq!(
            (copy.from.as_deref(), copy.sources.clone(), copy.dest.as_str()),
            (Some("base"), vec!["/a".to_string()], "/b/")
        );
        assert_eq!(b.stages[1].steps[1].command, Command::Cmd(CmdLine::Exec(vec!["sh".into()])));
    }

    #[test]
    fn bad_input_names_the_line() {
        assert_eq!(
            build("RUN x").unwrap_err().to_string(),
            "dockerfile parse error line 1: no build stage in current context"
        );
        assert_eq!(
            build("FROM a\nENV\n").unwrap_err().to_string(),
            "dockerfile parse error line 2: ENV requires at least one argument"
        );
        assert_eq!(
            build("FROM a\nCOPY x\n").unwrap_err().to_string(),
            "dockerfile parse error line 2: COPY requires at least two arguments"
        );
        assert!(build("FROM a\nCOPY --bogus=1 x y\n").unwrap_err().to_string().contains("unknown flag: bogus"));
        assert!(build("FROM a AS 1x\n").is_err());
        assert!(build("FROM a AS x\nFROM b AS x\n").unwrap_err().to_string().contains("duplicate name x"));
        assert!(build("FROM a\nENV a=1 b\n").unwrap_err().to_string().contains("can't find = in \"b\""));
    }

    #[test]
    fn secret_and_ssh_mounts_are_refused_clearly() {
        let err = build("FROM a\nRUN --mount=type=secret,id=x cat /run/secrets/x\n").unwrap_err();
        assert!(err.to_string().contains("needs a BuildKit session"), "{err}");
        assert!(build("FROM a\nRUN --security=insecure true\n").unwrap_err().to_string().contains("entitlement"));
        assert!(build("FROM a\nRUN --network=bridge2 true\n")
            .unwrap_err()
            .to_string()
            .contains("unsupported network mode"));
        let err = build("FROM a\nRUN --mount=type=cache,target=/x,colour=red true\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "dockerfile parse error line 2: unexpected key 'colour' in 'type=cache,target=/x,colour=red'"
        );
    }

    #[test]
    fn run_takes_mounts_and_a_network() {
        let build =
            build("FROM a\nRUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t --network=none make\n")
                .unwrap();
        match &build.stages[0].steps[0].command {
            Command::Run { mounts, network, .. } => {
                assert_eq!(mounts.iter().map(|m| m.target.as_str()).collect::<Vec<_>>(), ["/c", "/t"]);
                assert_eq!(network.as_deref(), Some("none"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn words_keep_their_quotes() {
        assert_eq!(words_keeping_quotes("a=\"x y\" b='1 2' c\\ d", '\\'), vec!["a=\"x y\"", "b='1 2'", "c\\ d"]);
    }
}
