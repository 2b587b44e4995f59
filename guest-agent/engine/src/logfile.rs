//! Per-container output log: what the container wrote, byte for byte, with
//! the stream and a timestamp per chunk.
//!
//! A binary format of our own rather than Docker's json-file: JSON strings
//! cannot carry arbitrary bytes, and attach streams are served from this
//! log, so `docker run img cat /bin/x > copy` must round-trip exactly.
//! Record: stream (1 byte: 1 stdout, 2 stderr), time (i64 LE, ns since the
//! epoch), length (u32 LE), then the bytes. The file is rotated to
//! `container.log.1` past `max_bytes`; one rotated file is kept.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const LOG_FILE: &str = "container.log";
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

pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
}

impl LogWriter {
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<LogWriter> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter { path: path.to_path_buf(), file, size, max_bytes: max_bytes.max(4096) })
    }

    pub fn append(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        if self.size >= self.max_bytes {
            std::fs::rename(&self.path, rotated(&self.path))?;
            self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
            self.size = 0;
        }
        let mut record = Vec::with_capacity(HEADER + data.len());
        record.push(stream as u8);
        record.extend_from_slice(&now_ns().to_le_bytes());
        record.extend_from_slice(&(data.len() as u32).to_le_bytes());
        record.extend_from_slice(data);
        // One write per record: a reader never sees half a header from a
        // writer that is still running (it may see a short tail after a
        // crash, which `read_records` stops at).
        self.file.write_all(&record)?;
        self.size += record.len() as u64;
        Ok(())
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

/// Every record kept for a container (rotated file first), oldest first.
pub fn read_all(dir: &Path) -> io::Result<Vec<Record>> {
    let path = dir.join(LOG_FILE);
    let mut records = Vec::new();
    for file in [rotated(&path), path] {
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
    pub fn at_end(dir: &Path) -> LogCursor {
        let path = dir.join(LOG_FILE);
        let mut cursor = LogCursor { path, file: None, inode: 0, offset: 0 };
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

    #[test]
    fn records_round_trip_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(&dir.path().join(LOG_FILE), 4096).unwrap();
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
        let mut writer = LogWriter::open(&dir.path().join(LOG_FILE), 1 << 20).unwrap();
        writer.append(Stream::Stdout, b"complete").unwrap();
        let mut file = std::fs::OpenOptions::new().append(true).open(dir.path().join(LOG_FILE)).unwrap();
        file.write_all(&[1, 2, 3]).unwrap();
        assert_eq!(read_all(dir.path()).unwrap().len(), 1);
    }
}
