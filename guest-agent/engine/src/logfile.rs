//! Per-container output log: what the container wrote, byte for byte, with
//! the stream and a timestamp per chunk.
//!
//! A binary format of our own rather than Docker's json-file: JSON strings
//! cannot carry arbitrary bytes, and attach streams are served from this
//! log, so `docker run img cat /bin/x > copy` must round-trip exactly.
//! Record: stream (1 byte: 1 stdout, 2 stderr), time (i64 LE, ns since the
//! epoch), length (u32 LE), then the bytes. The file is rotated past
//! `max_bytes` to `container.log.1` (older ones to `.2`, ...), keeping
//! `max_files` files in all, as json-file's max-size and max-file do.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub use crate::container_dir::LOG_FILE;
const HEADER: usize = 13;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stream {
    Stdout = 1,
    Stderr = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub stream: Stream,
    pub time_ns: i64,
    pub data: Vec<u8>,
}

pub use berth_agent_proto::time::now_ns;

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// How much of a container's output is kept: json-file's `max-size` and
/// `max-file` (files in all, the live one included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogLimits {
    pub max_bytes: u64,
    pub max_files: u32,
}

impl Default for LogLimits {
    /// Docker keeps json-file logs unbounded unless told; a VM's disk is
    /// small, so Berth caps them at 2 files of 32 MiB unless told.
    fn default() -> LogLimits {
        LogLimits { max_bytes: 32 << 20, max_files: 2 }
    }
}

impl LogLimits {
    /// From Docker's `LogConfig.Config` (json-file / local options), in
    /// key order.
    pub fn from_options<'a>(options: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<LogLimits, String> {
        let mut limits = LogLimits::default();
        let mut max_files = None;
        let mut sized = false;
        for (key, value) in options {
            match key {
                "max-size" => {
                    sized = true;
                    limits.max_bytes = parse_size(value)
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("invalid value for log opt max-size: {value:?}"))?
                }
                "max-file" => {
                    max_files = Some(
                        value
                            .parse::<u32>()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| format!("invalid value for log opt max-file: {value:?}"))?,
                    )
                }
                other => return Err(format!("log opt '{other}' is not supported by Berth yet")),
            }
        }
        // As json-file: max-file without max-size means nothing; with it, 1 by default.
        if sized {
            limits.max_files = max_files.unwrap_or(1);
        } else if let Some(files) = max_files {
            limits.max_files = files;
        }
        Ok(limits)
    }
}

/// `10m`, `1.5g`, `512k`, `100` (bytes): Docker's RAMInBytes units (powers of 1024).
fn parse_size(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.trim_end_matches("ib").trim_end_matches('b');
    let (number, unit) = match lower.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&lower[..i], &lower[i..]),
        None => (lower, ""),
    };
    let multiplier: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    let number: f64 = number.trim().parse().ok().filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    Some((number * multiplier as f64) as u64)
}

pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    limits: LogLimits,
}

impl LogWriter {
    pub fn open(path: &Path, limits: LogLimits) -> io::Result<LogWriter> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        let limits = LogLimits { max_bytes: limits.max_bytes.max(4096), max_files: limits.max_files.max(1) };
        Ok(LogWriter { path: path.to_path_buf(), file, size, limits })
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.limits.max_files - 1;
        if keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..keep).rev() {
                match std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Appends `data` as one record, or several when it would overfill the
    /// file: a record is only a chunk of the stream, so splitting one
    /// keeps the output intact and each file within max-size.
    pub fn append(&mut self, stream: Stream, mut data: &[u8]) -> io::Result<()> {
        let time_ns = now_ns();
        loop {
            if self.size + HEADER as u64 >= self.limits.max_bytes {
                self.rotate()?;
            }
            let room = (self.limits.max_bytes - self.size) as usize - HEADER;
            let (chunk, rest) = data.split_at(data.len().min(room));
            let mut record = Vec::with_capacity(HEADER + chunk.len());
            record.push(stream as u8);
            record.extend_from_slice(&time_ns.to_le_bytes());
            record.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            record.extend_from_slice(chunk);
            // One write per record: a reader never sees half a header from a
            // writer that is still running (it may see a short tail after a
            // crash, which `read_records` stops at).
            self.file.write_all(&record)?;
            self.size += record.len() as u64;
            if rest.is_empty() {
                return Ok(());
            }
            data = rest;
        }
    }
}

/// Reads whole records from `reader`; stops quietly at a torn tail.
fn read_records(reader: impl Read, out: &mut Vec<Record>) -> io::Result<u64> {
    let mut reader = BufReader::new(reader);
    let mut consumed = 0u64;
    loop {
        let mut header = [0u8; HEADER];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(consumed),
            Err(e) => return Err(e),
        }
        let stream = if header[0] == 2 { Stream::Stderr } else { Stream::Stdout };
        let time_ns = i64::from_le_bytes(header[1..9].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(header[9..13].try_into().expect("4 bytes")) as usize;
        let mut data = vec![0u8; len];
        match reader.read_exact(&mut data) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(consumed),
            Err(e) => return Err(e),
        }
        consumed += (HEADER + len) as u64;
        out.push(Record { stream, time_ns, data });
    }
}

/// Every record kept for a container (rotated files first), oldest first.
pub fn read_all(dir: &Path) -> io::Result<Vec<Record>> {
    let path = dir.join(LOG_FILE);
    let mut records = Vec::new();
    let rotations = (1..).take_while(|n| rotated(&path, *n).exists()).count() as u32;
    let files: Vec<PathBuf> = (1..=rotations).rev().map(|n| rotated(&path, n)).chain([path.clone()]).collect();
    for file in files {
        match File::open(&file) {
            Ok(f) => {
                read_records(f, &mut records)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(records)
}

/// Reads a live log from a position on, across rotations.
pub struct LogCursor {
    path: PathBuf,
    file: Option<File>,
    inode: u64,
    offset: u64,
}

impl LogCursor {
    /// A cursor at the current end of the log: it yields what is written
    /// from now on.
    ///
    /// A log not written yet (attach before start) is created here, as the
    /// writer would create it (append, never truncated), so that the cursor
    /// holds it open from the start: a `--rm` container can be removed, its
    /// directory with it, before the follower reads what it printed.
    pub fn at_end(dir: &Path) -> LogCursor {
        let path = dir.join(LOG_FILE);
        let mut cursor = LogCursor { path, file: None, inode: 0, offset: 0 };
        if !cursor.path.exists() {
            let _ = std::fs::OpenOptions::new().create(true).append(true).open(&cursor.path);
        }
        if cursor.reopen() {
            cursor.offset = cursor.file.as_ref().and_then(|f| f.metadata().ok()).map(|m| m.len()).unwrap_or(0);
        }
        cursor
    }

    fn reopen(&mut self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match File::open(&self.path) {
            Ok(file) => {
                self.inode = file.metadata().map(|m| m.ino()).unwrap_or(0);
                self.file = Some(file);
                self.offset = 0;
                true
            }
            Err(_) => false,
        }
    }

    /// The records written since the last call.
    pub fn read_new(&mut self) -> io::Result<Vec<Record>> {
        use std::os::unix::fs::MetadataExt;
        let mut records = Vec::new();
        if self.file.is_none() && !self.reopen() {
            return Ok(records);
        }
        loop {
            let file = self.file.as_mut().expect("opened above");
            file.seek(SeekFrom::Start(self.offset))?;
            self.offset += read_records(&mut *file, &mut records)?;
            // Rotated under us: the rest is in the new file.
            let current = std::fs::metadata(&self.path).map(|m| m.ino()).unwrap_or(self.inode);
            if current == self.inode || !self.reopen() {
                return Ok(records);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docker run --rm`: the follower attached before the log existed and
    /// reads only after the container (and its directory) is gone.
    #[test]
    fn a_cursor_placed_before_the_first_write_reads_it_after_removal() {
        let dir = tempfile::tempdir().unwrap();
        let container = dir.path().join("c");
        std::fs::create_dir(&container).unwrap();
        let mut cursor = LogCursor::at_end(&container);
        let mut writer = LogWriter::open(&container.join(LOG_FILE), LogLimits::default()).unwrap();
        writer.append(Stream::Stdout, b"bye\n").unwrap();
        drop(writer);
        std::fs::remove_dir_all(&container).unwrap();
        let seen = cursor.read_new().unwrap();
        assert_eq!(seen.iter().map(|r| r.data.as_slice()).collect::<Vec<_>>(), vec![&b"bye\n"[..]]);
    }

    #[test]
    fn records_round_trip_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits { max_bytes: 4096, max_files: 2 };
        let mut writer = LogWriter::open(&dir.path().join(LOG_FILE), limits).unwrap();
        let mut cursor = LogCursor::at_end(dir.path());
        writer.append(Stream::Stdout, b"hello\n").unwrap();
        writer.append(Stream::Stderr, &[0, 255, 10]).unwrap();
        let seen = cursor.read_new().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!((seen[1].stream, seen[1].data.as_slice()), (Stream::Stderr, &[0u8, 255, 10][..]));
        assert!(cursor.read_new().unwrap().is_empty());
        let big = vec![b'x'; 3000];
        for _ in 0..3 {
            writer.append(Stream::Stdout, &big).unwrap();
        }
        let seen = cursor.read_new().unwrap();
        assert_eq!(seen.len(), 3, "the cursor follows across a rotation");
        for _ in 0..7 {
            writer.append(Stream::Stdout, &big).unwrap();
        }
        // 12 records written; a file rotates past 4 KiB (two big records),
        // and only one rotated file is kept, so the oldest are gone.
        let all = read_all(dir.path()).unwrap();
        assert!(all.len() < 12 && all.len() >= 2, "only one rotated file is kept ({} records)", all.len());
        assert!(all.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
    }

    #[test]
    fn a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(&dir.path().join(LOG_FILE), LogLimits::default()).unwrap();
        writer.append(Stream::Stdout, b"complete").unwrap();
        let mut file = std::fs::OpenOptions::new().append(true).open(dir.path().join(LOG_FILE)).unwrap();
        file.write_all(&[1, 2, 3]).unwrap();
        assert_eq!(read_all(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn max_size_and_max_file_as_json_file_reads_them() {
        let limits = |v: serde_json::Value| {
            let options: std::collections::BTreeMap<String, String> = serde_json::from_value(v).unwrap();
            LogLimits::from_options(options.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        };
        assert_eq!(limits(serde_json::json!({})).unwrap(), LogLimits::default());
        assert_eq!(
            limits(serde_json::json!({"max-size": "10m"})).unwrap(),
            LogLimits { max_bytes: 10 << 20, max_files: 1 }
        );
        assert_eq!(
            limits(serde_json::json!({"max-size": "1.5k", "max-file": "3"})).unwrap(),
            LogLimits { max_bytes: 1536, max_files: 3 }
        );
        assert_eq!(limits(serde_json::json!({"max-file": "100"})).unwrap().max_files, 100);
        assert!(limits(serde_json::json!({"max-size": "ten"})).unwrap_err().contains("max-size"));
        assert!(limits(serde_json::json!({"max-file": "0"})).is_err());
        assert!(limits(serde_json::json!({"compress": "true"})).unwrap_err().contains("compress"));
    }

    #[test]
    fn rotation_keeps_max_file_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut writer = LogWriter::open(&path, LogLimits { max_bytes: 4096, max_files: 3 }).unwrap();
        for i in 0..20u8 {
            writer.append(Stream::Stdout, &[i; 3000]).unwrap();
        }
        assert!(rotated(&path, 2).exists() && !rotated(&path, 3).exists(), "3 files in all");
        for file in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            assert!(std::fs::metadata(&file).unwrap().len() <= 4096, "records split to fit max-size");
        }
        let kept: Vec<u8> = read_all(dir.path()).unwrap().into_iter().flat_map(|r| r.data).collect();
        let written: Vec<u8> = (0..20u8).flat_map(|i| [i; 3000]).collect();
        assert!(kept.len() > 2 * 4096 - 100 && written.ends_with(&kept), "the newest output, in order");

        // max-file 1: the file starts over.
        let dir = tempfile::tempdir().unwrap();
        let mut writer =
            LogWriter::open(&dir.path().join(LOG_FILE), LogLimits { max_bytes: 4096, max_files: 1 }).unwrap();
        for i in 0..5u8 {
            writer.append(Stream::Stdout, &[i; 3000]).unwrap();
        }
        assert_eq!(read_all(dir.path()).unwrap().len(), 1);
    }
}
