//! COPY/ADD from the context: which context paths go where (Docker's
//! rules for wildcards, directories and a destination ending in `/`),
//! the cache key of the sources, and the tar that the copy extracts into
//! the image (through the archive helper, in the image's own root, so
//! symlinks on the destination side resolve there).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::cache::sha256_hex;
use super::context::{Context, Kind};
use super::ignore::clean;

/// One source and where it lands (both cleaned, without a leading `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub source: String,
    pub target: String,
    /// A directory source: its contents go into `target`.
    pub contents: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub items: Vec<Item>,
    /// `file:<hash>`, `dir:<hash>` or `multi:<hash>`, as the classic
    /// builder writes it into the history and the cache key.
    pub key: String,
}

/// Plans copying `sources` (expanded) to `dest` (expanded, absolute).
/// `is_dir_in_image` tells whether the image has a directory at a path.
pub fn plan(
    context: &Context,
    keyword: &str,
    sources: &[String],
    dest: &str,
    is_dir_in_image: impl Fn(&str) -> bool,
) -> Result<Plan, String> {
    let dest_is_dir = dest.ends_with('/') || dest.ends_with("/.");
    if sources.len() > 1 && !dest_is_dir {
        return Err(format!(
            "When using {keyword} with more than one source file, the destination must be a directory and end with a /"
        ));
    }
    let dest = clean(dest);
    let mut matched = Vec::new();
    for source in sources {
        let found = context.matching(source)?;
        if found.is_empty() {
            if source.contains(['*', '?', '[']) {
                continue;
            }
            return Err(format!(
                "{keyword} failed: file not found in build context or excluded by .dockerignore: stat {source}: file does not exist"
            ));
        }
        matched.extend(found);
    }
    if matched.is_empty() {
        return Err(format!("{keyword} failed: no source files were specified"));
    }
    let into_dir = dest_is_dir || matched.len() > 1 || dest.is_empty() || is_dir_in_image(&dest);
    let mut items = Vec::new();
    let mut hashes = Vec::new();
    for source in &matched {
        let entry = context.entry(source).expect("matched from the manifest");
        let contents = entry.kind == Kind::Dir;
        let base = source.rsplit('/').next().unwrap_or(source);
        let target = if contents {
            dest.clone()
        } else if into_dir {
            if dest.is_empty() {
                base.to_string()
            } else {
                format!("{dest}/{base}")
            }
        } else {
            dest.clone()
        };
        hashes.push(context.source_hash(source));
        items.push(Item { source: source.clone(), target, contents });
    }
    let key = match items.as_slice() {
        [one] if one.contents => format!("dir:{}", hashes[0]),
        [_] => format!("file:{}", hashes[0]),
        _ => format!("multi:{}", sha256_hex(hashes.join(",").as_bytes())),
    };
    Ok(Plan { items, key })
}

/// Ownership and mode the copied files get (`--chown`, `--chmod`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Attributes {
    pub owner: Option<(u64, u64)>,
    pub mode: Option<u32>,
}

fn header(kind: tar::EntryType, mode: u32, attrs: Attributes, size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(attrs.mode.unwrap_or(mode));
    // Context files belong to root unless --chown says otherwise.
    let (uid, gid) = attrs.owner.unwrap_or((0, 0));
    header.set_uid(uid);
    header.set_gid(gid);
    header.set_size(size);
    header.set_mtime(mtime);
    header
}

/// Writes the plan's files as a tar of paths relative to `/`.
pub fn write_tar(context: &Context, plan: &Plan, attrs: Attributes, out: impl Write) -> io::Result<()> {
    let mut builder = tar::Builder::new(out);
    for item in &plan.items {
        for (name, entry) in context.walk(&item.source) {
            let rel = &name[item.source.len()..].trim_start_matches('/');
            let target = match (item.contents, rel.is_empty()) {
                (true, true) => continue, // the destination directory itself
                (true, false) if item.target.is_empty() => rel.to_string(),
                (true, false) => format!("{}/{rel}", item.target),
                (false, _) => item.target.clone(),
            };
            match &entry.kind {
                Kind::Dir => {
                    let mut h = header(tar::EntryType::Directory, entry.mode, attrs, 0, entry.mtime);
                    builder.append_data(&mut h, format!("{target}/"), io::empty())?;
                }
                Kind::Symlink(link) => {
                    let mut h =
                        header(tar::EntryType::Symlink, 0o777, Attributes { mode: None, ..attrs }, 0, entry.mtime);
                    builder.append_link(&mut h, &target, link)?;
                }
                Kind::File => {
                    let file = std::fs::File::open(context.file_path(name))?;
                    let mut h = header(tar::EntryType::Regular, entry.mode, attrs, entry.size, entry.mtime);
                    builder.append_data(&mut h, &target, file)?;
                }
            }
        }
    }
    builder.finish()
}

/// Files made from here-documents (`COPY <<EOF /dest`).
pub fn write_inline_tar(files: &[(String, Vec<u8>)], attrs: Attributes, out: impl Write) -> io::Result<()> {
    let mut builder = tar::Builder::new(out);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    for (target, data) in files {
        let mut h = header(tar::EntryType::Regular, 0o644, attrs, data.len() as u64, now);
        builder.append_data(&mut h, target, data.as_slice())?;
    }
    builder.finish()
}

/// One file from disk at `target` (ADD of a URL: the download), mode
/// 0600 unless --chmod, as dockerd saves remote files.
pub fn write_file_tar(target: &str, path: &Path, attrs: Attributes, mtime: u64, out: impl Write) -> io::Result<()> {
    let mut builder = tar::Builder::new(out);
    let file = std::fs::File::open(path)?;
    let mut h = header(tar::EntryType::Regular, 0o600, attrs, file.metadata()?.len(), mtime);
    builder.append_data(&mut h, target, file)?;
    builder.finish()
}

/// The name ADD gives a URL's file in a directory: the last segment of
/// its path (dockerd's `filepath.Base` of it), none for a bare host.
pub fn url_file_name(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let path = path.split_once('/').map_or("", |(_, p)| p);
    let name = path.rsplit('/').find(|s| !s.is_empty())?;
    (name != "." && name != "..").then(|| name.to_string())
}

/// A tar holding one directory (WORKDIR creating a missing directory).
pub fn write_dir_tar(path: &str, out: impl Write) -> io::Result<()> {
    let mut builder = tar::Builder::new(out);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut h = header(tar::EntryType::Directory, 0o755, Attributes::default(), 0, now);
    builder.append_data(&mut h, format!("{}/", clean(path)), io::empty())?;
    builder.finish()
}

/// What an image's layers (bottom first) show at `path`: the top-most
/// layer that has it, unless a whiteout above hid it. Parent symlinks are
/// not followed (callers use it for hints: is this a directory, the
/// image's /etc/passwd).
pub fn lookup(layers: &[PathBuf], path: &str) -> Option<PathBuf> {
    let path = clean(path);
    if path.is_empty() {
        return layers.last().cloned();
    }
    let (parent, name) = match path.rsplit_once('/') {
        Some((parent, name)) => (parent.to_string(), name.to_string()),
        None => (String::new(), path.clone()),
    };
    for layer in layers.iter().rev() {
        let candidate = layer.join(&path);
        if std::fs::symlink_metadata(&candidate).is_ok() {
            return Some(candidate);
        }
        let parent_dir = layer.join(&parent);
        if parent_dir.join(format!(".wh.{name}")).exists() || parent_dir.join(".wh..wh..opq").exists() {
            return None;
        }
    }
    None
}

pub fn is_dir(layers: &[PathBuf], path: &str) -> bool {
    lookup(layers, path).and_then(|p| std::fs::symlink_metadata(p).ok()).is_some_and(|m| m.is_dir())
}

/// `--chown=user:group` against the image's /etc/passwd and /etc/group:
/// numbers as they are, names looked up (Docker's rules; the group
/// defaults to the user's primary group for a name, to the uid for a number).
pub fn resolve_owner(layers: &[PathBuf], spec: &str) -> Result<(u64, u64), String> {
    let read = |file: &str| lookup(layers, file).and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read("etc/passwd");
    let find = |table: &str, name: &str, field: usize| -> Option<(u64, Option<u64>)> {
        table.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.first() == Some(&name)).and_then(|f| {
            let id = f.get(field)?.parse().ok()?;
            Some((id, f.get(3).and_then(|g| g.parse().ok())))
        })
    };
    let (uid, primary) = match user.parse::<u64>() {
        Ok(uid) => (uid, None),
        Err(_) => find(&passwd, user, 2)
            .ok_or_else(|| format!("unable to convert uid/gid chown string to host mapping: can't find uid for user {user}: no such user: {user}"))?,
    };
    let gid = match group {
        None => primary.unwrap_or(uid),
        Some(g) => match g.parse::<u64>() {
            Ok(gid) => gid,
            Err(_) => find(&read("etc/group"), g, 2).map(|(gid, _)| gid).ok_or_else(|| {
                format!("unable to convert uid/gid chown string to host mapping: can't find gid for group {g}: no such group: {g}")
            })?,
        },
    };
    Ok((uid, gid))
}

/// Octal `--chmod` (BuildKit also accepts symbolic modes; Berth does not yet).
pub fn parse_chmod(spec: &str) -> Result<u32, String> {
    u32::from_str_radix(spec, 8).ok().filter(|m| *m <= 0o7777).ok_or_else(|| format!("invalid chmod parameter: {spec}"))
}

/// Whether a layer path would be a tar (ADD extracts local tars).
pub fn is_archive(path: &Path) -> bool {
    let mut magic = [0u8; 262];
    let Ok(mut file) = std::fs::File::open(path) else { return false };
    let n = std::io::Read::read(&mut file, &mut magic).unwrap_or(0);
    let m = &magic[..n];
    m.starts_with(&[0x1f, 0x8b])
        || m.starts_with(b"BZh")
        || m.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || (n >= 262 && &m[257..262] == b"ustar")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_urls_file_name_is_its_last_path_segment() {
        assert_eq!(url_file_name("http://h:8/a/b/tool.tgz?x=1#f").as_deref(), Some("tool.tgz"));
        assert_eq!(url_file_name("https://h/dir/").as_deref(), Some("dir"));
        assert_eq!(url_file_name("https://h"), None);
        assert_eq!(url_file_name("https://h/"), None);
        assert_eq!(url_file_name("https://h/a/.."), None);
    }

    fn context(files: &[&str]) -> (tempfile::TempDir, Context) {
        let mut builder = tar::Builder::new(Vec::new());
        for name in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o640);
            builder.append_data(&mut h, name, &b"x"[..]).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let c = Context::ingest(io::Cursor::new(builder.into_inner().unwrap()), dir.path()).unwrap();
        (dir, c)
    }

    fn targets(plan: &Plan) -> Vec<(&str, &str)> {
        plan.items.iter().map(|i| (i.source.as_str(), i.target.as_str())).collect()
    }

    #[test]
    fn docker_destination_rules() {
        let (_d, c) = context(&["a.txt", "b.txt", "src/x.rs", "src/y/z.rs"]);
        let p = plan(&c, "COPY", &["a.txt".into()], "/app/", |_| false).unwrap();
        assert_eq!(targets(&p), vec![("a.txt", "app/a.txt")]);
        assert!(p.key.starts_with("file:"));
        let p = plan(&c, "COPY", &["a.txt".into()], "/app/renamed", |_| false).unwrap();
        assert_eq!(targets(&p), vec![("a.txt", "app/renamed")]);
        let p = plan(&c, "COPY", &["a.txt".into()], "/existing", |p| p == "existing").unwrap();
        assert_eq!(targets(&p), vec![("a.txt", "existing/a.txt")]);
        let p = plan(&c, "COPY", &["*.txt".into()], "/app", |_| false).unwrap();
        assert_eq!(targets(&p), vec![("a.txt", "app/a.txt"), ("b.txt", "app/b.txt")]);
        assert!(p.key.starts_with("multi:"));
        let p = plan(&c, "COPY", &["src".into()], "/s", |_| false).unwrap();
        assert!(p.key.starts_with("dir:") && p.items[0].contents);
        let err = plan(&c, "COPY", &["a.txt".into(), "b.txt".into()], "/app", |_| false).unwrap_err();
        assert!(err.contains("must be a directory and end with a /"));
        let err = plan(&c, "COPY", &["nope".into()], "/app", |_| false).unwrap_err();
        assert_eq!(
            err,
            "COPY failed: file not found in build context or excluded by .dockerignore: stat nope: file does not exist"
        );
        assert_eq!(
            plan(&c, "COPY", &["*.md".into()], "/", |_| false).unwrap_err(),
            "COPY failed: no source files were specified"
        );
    }

    #[test]
    fn the_tar_holds_the_contents_owned_as_asked() {
        let (_d, c) = context(&["src/x.rs", "src/y/z.rs"]);
        let p = plan(&c, "COPY", &["src".into()], "/s", |_| false).unwrap();
        let mut out = Vec::new();
        write_tar(&c, &p, Attributes { owner: Some((7, 8)), mode: None }, &mut out).unwrap();
        let mut archive = tar::Archive::new(out.as_slice());
        let got: Vec<(String, u64, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().uid().unwrap(), e.header().mode().unwrap())
            })
            .collect();
        assert_eq!(got, vec![("s/x.rs".into(), 7, 0o640), ("s/y/".into(), 7, 0o755), ("s/y/z.rs".into(), 7, 0o640)]);
    }

    #[test]
    fn owners_resolve_in_the_image() {
        let layer = tempfile::tempdir().unwrap();
        std::fs::create_dir(layer.path().join("etc")).unwrap();
        std::fs::write(
            layer.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(layer.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let layers = vec![layer.path().to_path_buf()];
        assert_eq!(resolve_owner(&layers, "app").unwrap(), (1000, 1001));
        assert_eq!(resolve_owner(&layers, "app:staff").unwrap(), (1000, 50));
        assert_eq!(resolve_owner(&layers, "5:6").unwrap(), (5, 6));
        assert!(resolve_owner(&layers, "nobody").unwrap_err().contains("no such user: nobody"));
        assert!(is_dir(&layers, "/etc"));
        assert!(!is_dir(&layers, "/etc/passwd"));
        assert_eq!(parse_chmod("755").unwrap(), 0o755);
        assert!(parse_chmod("u+x").is_err());
    }
}
