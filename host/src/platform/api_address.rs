//! Where the Docker API is served, and how a docker client names it: a unix
//! socket (`unix:///…/docker.sock`) or, on Windows, a named pipe
//! (`npipe:////./pipe/berth_engine`, what `docker context` and Docker
//! Desktop's own `docker_engine` pipe use). Plain code, tested on every host.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The default home's pipe, beside Docker Desktop's `docker_engine`.
pub const DEFAULT_PIPE: &str = "berth_engine";

/// The prefix of a local pipe's path. Pipes of other machines
/// (`\\server\pipe\x`) are not ours to serve.
const LOCAL_PIPE_PREFIX: &str = r"\\.\pipe\";

/// Windows' limit on a pipe's whole path (CreateNamedPipeW).
const MAX_PIPE_PATH: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAddress {
    Unix(PathBuf),
    NamedPipe(PipeName),
}

impl ApiAddress {
    /// Whether a DOCKER_HOST value names this address: the CLI would then
    /// reach Berth through it; any other value overrides Berth's context.
    pub fn is_named_by(&self, docker_host: &str) -> bool {
        match self {
            ApiAddress::Unix(_) => docker_host == self.docker_host(),
            ApiAddress::NamedPipe(pipe) => {
                PipeName::parse_docker_host(docker_host).is_ok_and(|named| named.name.eq_ignore_ascii_case(&pipe.name))
            }
        }
    }

    /// The DOCKER_HOST form, as the docker context records it.
    pub fn docker_host(&self) -> String {
        match self {
            ApiAddress::Unix(path) => format!("unix://{}", path.display()),
            ApiAddress::NamedPipe(pipe) => pipe.docker_host(),
        }
    }
}

impl fmt::Display for ApiAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiAddress::Unix(path) => write!(f, "{}", path.display()),
            ApiAddress::NamedPipe(pipe) => write!(f, "{}", pipe.path()),
        }
    }
}

/// A local named pipe, by its name after `\\.\pipe\`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeName {
    name: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PipeNameError {
    #[error("{0:?} is not a named pipe address: it needs the npipe:// scheme (npipe:////./pipe/NAME)")]
    NotNpipe(String),
    #[error("{0:?} names a pipe on another machine; Berth serves only local pipes (\\\\.\\pipe\\NAME)")]
    NotLocal(String),
    #[error("the pipe name in {0:?} is empty or has a backslash after \\\\.\\pipe\\")]
    BadName(String),
    #[error("the pipe path {0:?} is longer than Windows' 256 characters")]
    TooLong(String),
}

impl PipeName {
    /// The pipe `\\.\pipe\<name>`; `name` may not be empty or hold a backslash.
    pub fn new(name: &str) -> Result<PipeName, PipeNameError> {
        let path = format!("{LOCAL_PIPE_PREFIX}{name}");
        if name.is_empty() || name.contains('\\') {
            return Err(PipeNameError::BadName(path));
        }
        if path.encode_utf16().count() > MAX_PIPE_PATH {
            return Err(PipeNameError::TooLong(path));
        }
        Ok(PipeName { name: name.to_string() })
    }

    /// One pipe per Berth home: `berth_engine` for the default home, and
    /// `berth_engine-<8 hex digits of the home path's sha256>` for any other,
    /// the suffix its docker context gets (docker_context.rs), so two homes
    /// never fight over one pipe.
    pub fn for_home(home: &Path, is_default_home: bool) -> PipeName {
        if is_default_home {
            return PipeName { name: DEFAULT_PIPE.into() };
        }
        PipeName { name: format!("{DEFAULT_PIPE}-{}", short_digest(home)) }
    }

    /// The path CreateNamedPipeW and CreateFileW take: `\\.\pipe\<name>`.
    pub fn path(&self) -> String {
        format!("{LOCAL_PIPE_PREFIX}{}", self.name)
    }

    /// `npipe:////./pipe/<name>`: the docker CLI turns every `/` after the
    /// scheme into `\` (docker/go-connections sockets.go), so this is the
    /// form of [`PipeName::path`] it reads back.
    pub fn docker_host(&self) -> String {
        format!("npipe://{}", self.path().replace('\\', "/"))
    }

    /// Reads a DOCKER_HOST-style address as the docker CLI does: either
    /// slash works after `npipe://` (`npipe:////./pipe/x`, `npipe://\\.\pipe\x`).
    pub fn parse_docker_host(address: &str) -> Result<PipeName, PipeNameError> {
        let scheme_len = "npipe://".len();
        let rest = match address.get(..scheme_len) {
            Some(scheme) if scheme.eq_ignore_ascii_case("npipe://") => &address[scheme_len..],
            _ => return Err(PipeNameError::NotNpipe(address.to_string())),
        };
        let path = rest.replace('/', "\\");
        let Some(after) = strip_prefix_ignore_case(&path, LOCAL_PIPE_PREFIX) else {
            return Err(PipeNameError::NotLocal(address.to_string()));
        };
        PipeName::new(after).map_err(|err| match err {
            PipeNameError::BadName(_) => PipeNameError::BadName(address.to_string()),
            other => other,
        })
    }
}

/// 8 hex digits of a path's sha256: names derived from a Berth home or run
/// directory (pipes, docker contexts) that two homes do not share.
pub fn short_digest(path: &Path) -> String {
    Sha256::digest(path.as_os_str().as_encoded_bytes()).iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// Pipe paths are case-insensitive (`\\.\PIPE\x` is `\\.\pipe\x`).
fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_pipe_round_trips_through_the_docker_host_form() {
        let pipe = PipeName::for_home(Path::new(r"C:\Users\me\AppData\Local\Berth"), true);
        assert_eq!(pipe.path(), r"\\.\pipe\berth_engine");
        assert_eq!(pipe.docker_host(), "npipe:////./pipe/berth_engine");
        assert_eq!(PipeName::parse_docker_host(&pipe.docker_host()), Ok(pipe.clone()));
        assert_eq!(ApiAddress::NamedPipe(pipe.clone()).docker_host(), "npipe:////./pipe/berth_engine");
        assert_eq!(ApiAddress::NamedPipe(pipe).to_string(), r"\\.\pipe\berth_engine");
    }

    #[test]
    fn parses_what_docker_clients_write() {
        let engine = PipeName::new("docker_engine").unwrap();
        for address in [
            "npipe:////./pipe/docker_engine",
            r"npipe://\\.\pipe\docker_engine",
            "NPIPE:////./PIPE/docker_engine",
            r"npipe:////.\pipe/docker_engine",
        ] {
            assert_eq!(PipeName::parse_docker_host(address), Ok(engine.clone()), "{address}");
        }
        // Names keep their case and may hold dots, dashes and spaces.
        assert_eq!(
            PipeName::parse_docker_host("npipe:////./pipe/My Pipe-1.x").unwrap().path(),
            r"\\.\pipe\My Pipe-1.x"
        );
    }

    #[test]
    fn refuses_what_is_not_a_local_pipe() {
        use PipeNameError::*;
        let parse = PipeName::parse_docker_host;
        assert_eq!(parse("unix:///var/run/docker.sock"), Err(NotNpipe("unix:///var/run/docker.sock".into())));
        assert_eq!(parse("npipe"), Err(NotNpipe("npipe".into())));
        assert_eq!(
            parse("npipe:////server/pipe/docker_engine"),
            Err(NotLocal("npipe:////server/pipe/docker_engine".into()))
        );
        assert_eq!(parse("npipe:////./pipe/"), Err(BadName("npipe:////./pipe/".into())));
        // After `\\.\pipe\` a slash is a backslash to the CLI, and pipe names may hold none.
        assert_eq!(parse("npipe:////./pipe/a/b"), Err(BadName("npipe:////./pipe/a/b".into())));
        assert!(matches!(PipeName::new(&"x".repeat(250)), Err(TooLong(_))));
        assert!(PipeName::new(&"x".repeat(247)).is_ok(), "247 + 9 = 256 characters fit");
    }

    #[test]
    fn every_other_home_gets_a_pipe_of_its_own() {
        let a = PipeName::for_home(Path::new(r"C:\ci\a"), false);
        let b = PipeName::for_home(Path::new(r"C:\ci\b"), false);
        assert_ne!(a, b);
        assert!(
            a.path().starts_with(r"\\.\pipe\berth_engine-") && a.path().len() == r"\\.\pipe\berth_engine-".len() + 8
        );
        assert_eq!(a, PipeName::for_home(Path::new(r"C:\ci\a"), false), "stable across runs");
    }

    #[test]
    fn a_unix_socket_is_named_as_the_cli_names_it() {
        let address = ApiAddress::Unix("/h/run/docker.sock".into());
        assert_eq!(address.docker_host(), "unix:///h/run/docker.sock");
        assert_eq!(address.to_string(), "/h/run/docker.sock");
        assert!(address.is_named_by("unix:///h/run/docker.sock"));
        assert!(!address.is_named_by("unix:///var/run/docker.sock"));
    }

    #[test]
    fn a_docker_host_names_the_pipe_in_any_spelling() {
        let ours = ApiAddress::NamedPipe(PipeName::new("berth_engine").unwrap());
        assert!(ours.is_named_by("npipe:////./pipe/berth_engine"));
        assert!(ours.is_named_by(r"npipe://\\.\PIPE\Berth_Engine"), "pipe names ignore case");
        assert!(!ours.is_named_by("npipe:////./pipe/docker_engine"), "Docker Desktop's engine");
        assert!(!ours.is_named_by("tcp://127.0.0.1:2375"));
    }
}
