//! diod in its sandbox, spoken to in raw 9P2000.L as a hostile guest would:
//! walks the Linux client never sends (`..` from the root, on through a
//! symlink that points out) must find nothing outside the share.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;

use super::diod_args;
use crate::vm::plan9_sandbox::Sandbox;

const DIOD: &str = "/usr/sbin/diod";

/// A 9P2000.L client with just the messages the tests need.
struct Client {
    stream: UnixStream,
    tag: u16,
}

/// An Rlerror's errno, or the reply's body.
type Reply = Result<Vec<u8>, u32>;

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u16).to_le_bytes());
    out.extend(s.as_bytes());
}

impl Client {
    fn call(&mut self, kind: u8, body: &[u8]) -> Reply {
        self.tag += 1;
        let mut message = ((7 + body.len()) as u32).to_le_bytes().to_vec();
        message.push(kind);
        message.extend(self.tag.to_le_bytes());
        message.extend(body);
        self.stream.write_all(&message).unwrap();
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).unwrap();
        let mut reply = vec![0u8; u32::from_le_bytes(size) as usize - 4];
        self.stream.read_exact(&mut reply).unwrap();
        match reply[0] {
            7 => Err(u32::from_le_bytes(reply[3..7].try_into().unwrap())),
            k if k == kind + 1 => Ok(reply[3..].to_vec()),
            k => panic!("reply type {k} to {kind}"),
        }
    }

    fn start(stream: UnixStream, aname: &str) -> Client {
        let mut client = Client { stream, tag: 0 };
        let mut version = 65536u32.to_le_bytes().to_vec();
        string(&mut version, "9P2000.L");
        client.call(100, &version).expect("Tversion");
        let mut attach = [1u32.to_le_bytes(), u32::MAX.to_le_bytes()].concat();
        string(&mut attach, "root");
        string(&mut attach, aname);
        attach.extend(0u32.to_le_bytes());
        client.call(104, &attach).expect("Tattach");
        client
    }

    /// Walks from the root (fid 1) to a new fid.
    fn walk(&mut self, newfid: u32, names: &[&str]) -> Reply {
        self.walk_from(1, newfid, names)
    }

    /// One Twalk. The server stops a walk at a symlink, but a new walk may
    /// start from the symlink's fid.
    fn walk_from(&mut self, fid: u32, newfid: u32, names: &[&str]) -> Reply {
        let mut body = [fid.to_le_bytes(), newfid.to_le_bytes()].concat();
        body.extend((names.len() as u16).to_le_bytes());
        for name in names {
            string(&mut body, name);
        }
        let reply = self.call(110, &body)?;
        let walked = u16::from_le_bytes(reply[0..2].try_into().unwrap()) as usize;
        // A partial walk is a failure that makes no fid.
        if walked < names.len() {
            return Err(libc::ENOENT as u32);
        }
        Ok(reply)
    }

    fn read_file(&mut self, fid: u32) -> Result<String, u32> {
        self.call(12, &[fid.to_le_bytes(), (libc::O_RDONLY as u32).to_le_bytes()].concat())?;
        let reply = self.call(116, &[&fid.to_le_bytes()[..], &0u64.to_le_bytes(), &4096u32.to_le_bytes()].concat())?;
        let count = u32::from_le_bytes(reply[0..4].try_into().unwrap()) as usize;
        Ok(String::from_utf8_lossy(&reply[4..4 + count]).into_owned())
    }

    /// Tsetattr of the mode only.
    fn chmod(&mut self, fid: u32, mode: u32) -> Reply {
        let mut body = [fid.to_le_bytes(), 1u32.to_le_bytes(), mode.to_le_bytes(), [0; 4], [0; 4]].concat();
        body.extend([0u8; 40]);
        self.call(26, &body)
    }
}

/// diod serving `share` on one end of a socket pair, sandboxed or not.
fn serve(share: &Path, sandboxed: bool) -> (Client, std::process::Child) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let fd = OwnedFd::from(theirs);
    let mut cmd = std::process::Command::new(DIOD);
    cmd.args(diod_args(share)).stdin(fd.try_clone().unwrap()).stdout(fd);
    if sandboxed {
        let sandbox = Sandbox::prepare(share, Path::new(DIOD), &sandbox_root(share)).unwrap();
        // SAFETY: Sandbox::enter only makes syscalls on prepared strings.
        unsafe { cmd.pre_exec(move || sandbox.enter()) };
    }
    let child = cmd.spawn().unwrap();
    (Client::start(ours, &share.display().to_string()), child)
}

fn sandbox_root(share: &Path) -> std::path::PathBuf {
    share.parent().unwrap().join("sandbox-root")
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (share, outside) = (dir.path().join("share"), dir.path().join("outside"));
    std::fs::create_dir_all(&share).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(share.join("inside.txt"), "hello").unwrap();
    std::fs::write(outside.join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink("../outside", share.join("out")).unwrap();
    std::os::unix::fs::symlink(&outside, share.join("abs")).unwrap();
    dir
}

#[test]
fn a_hostile_client_cannot_leave_the_share() {
    if !Path::new(DIOD).exists() {
        eprintln!("skipped: {DIOD} is not installed (Debian's diod; packaging/setup.sh installs it)");
        return;
    }
    let dir = tree();
    let share = dir.path().join("share");
    let outside = dir.path().join("outside");

    // Without the sandbox diod follows the link and `..`: the threat is real.
    let (mut bare, mut child) = serve(&share, false);
    bare.walk(2, &["out"]).expect("the link");
    bare.walk_from(2, 3, &["secret.txt"]).expect("unconfined diod walks on from a symlink");
    assert_eq!(bare.read_file(3).unwrap(), "secret");
    bare.walk(4, &["..", "outside", "secret.txt"]).expect("unconfined diod walks above its export");
    assert_eq!(bare.read_file(4).unwrap(), "secret");
    drop(bare);
    child.wait().unwrap();

    let (mut client, mut child) = serve(&share, true);
    client.walk(2, &["inside.txt"]).expect("a file in the share");
    assert_eq!(client.read_file(2).unwrap(), "hello");
    client.walk(6, &["out"]).expect("the link");
    client.walk(7, &["abs"]).expect("the link");
    for (from, names) in [(6, &["secret.txt"][..]), (7, &["secret.txt"]), (1, &["..", "outside", "secret.txt"])] {
        if client.walk_from(from, 9, names).is_ok() {
            assert_ne!(client.read_file(9), Ok("secret".into()), "{names:?} read a file outside the share");
            let _ = client.call(120, &9u32.to_le_bytes()); // Tclunk
        }
    }
    // A chmod through the link does not reach the target.
    client.walk(4, &["abs"]).expect("the link itself is in the share");
    let before = std::fs::metadata(&outside).unwrap().permissions();
    let _ = client.chmod(4, 0o777);
    assert_eq!(std::fs::metadata(&outside).unwrap().permissions(), before, "a chmod left the share");
    // The host path above the share shows nothing of the user's.
    client.walk(5, &[".."]).expect("`..` stays inside the sandbox");
    drop(client);
    child.wait().unwrap();
    assert!(std::fs::read_dir(sandbox_root(&share)).unwrap().next().is_none(), "the sandbox leaked a mount");
}
