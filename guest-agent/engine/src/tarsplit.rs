//! Re-creating a layer's exact tar stream from its unpacked directory, so
//! `docker save` and `docker push`-style exports can hand out layers whose
//! digests still match the image config's diff IDs, without keeping a second
//! copy of every layer as a tarball.
//!
//! This is the idea of vbatts/tar-split, which Docker uses for the same job:
//! while a layer is unpacked, every byte of the tar stream that is *not* the
//! content of a regular file (headers, PAX and long-name records, padding,
//! the end-of-archive blocks, trailing zeros) is recorded verbatim, and each
//! file's content is recorded as a reference (path in the layer, size). A
//! replay writes the recorded bytes and reads the contents back from the
//! layer directory, which is immutable once unpacked. We write our own (about
//! 200 lines) because the Go original has no Rust counterpart and its JSON
//! format would buy us nothing.
//!
//! File format, gzip-compressed (headers are mostly zeros), a sequence of:
//! `M <u32 len> <bytes>` recorded bytes; `F <u64 size> <u32 len> <path>` a
//! file's content; `E` the end. A file that a later entry of the same layer
//! replaces (rare, but tar allows it) has its old content saved in a sidecar
//! (`<split>.old`: the contents, then a JSON table, then the table's length)
//! and is replayed from there.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

const META: u8 = b'M';
const FILE: u8 = b'F';
const END: u8 = b'E';
/// Recorded bytes are flushed in records of at most this size.
const META_CHUNK: usize = 1 << 20;

/// Where a layer directory's tar-split lives: beside it, never inside it
/// (the layer directory is an overlayfs lower dir, seen by containers).
pub fn split_path(layer_dir: &Path) -> PathBuf {
    let mut name = layer_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".tar-split.gz");
    layer_dir.with_file_name(name)
}

fn sidecar_path(split: &Path) -> PathBuf {
    let mut name = split.as_os_str().to_os_string();
    name.push(".old");
    PathBuf::from(name)
}

/// Moves the tar-split (and sidecar) recorded for `from` to where `to`'s belongs.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (split_path(from), split_path(to));
    match std::fs::rename(sidecar_path(&from), sidecar_path(&to)) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    std::fs::rename(from, to)
}

/// Removes a layer's tar-split (and sidecar), if any.
pub fn remove(layer_dir: &Path) {
    let split = split_path(layer_dir);
    let _ = std::fs::remove_file(sidecar_path(&split));
    let _ = std::fs::remove_file(split);
}

struct State {
    /// Offset in the uncompressed tar stream of the next byte read.
    pos: u64,
    /// The content range of the current regular file: not recorded.
    skip: (u64, u64),
    pending: Vec<u8>,
    out: GzEncoder<BufWriter<File>>,
    error: Option<io::Error>,
    records: u64,
    /// Regular files recorded by reference: layer path -> record number.
    files: BTreeMap<PathBuf, u64>,
    /// Replaced files' old contents: record number -> (offset, len) in the sidecar.
    saved: BTreeMap<u64, (u64, u64)>,
    sidecar: Option<File>,
    sidecar_len: u64,
}

impl State {
    fn flush_pending(&mut self) -> io::Result<()> {
        for chunk in self.pending.chunks(META_CHUNK) {
            self.out.write_all(&[META])?;
            self.out.write_all(&(chunk.len() as u32).to_le_bytes())?;
            self.out.write_all(chunk)?;
            self.records += 1;
        }
        self.pending.clear();
        Ok(())
    }
}

/// Records a tar stream as it is read, for [`write_tar`] to replay.
#[derive(Clone)]
pub struct Recorder {
    state: Rc<RefCell<State>>,
    split: PathBuf,
}

impl Recorder {
    /// Starts recording into `split` (normally `split_path` of a temporary
    /// layer directory's final name; the caller renames nothing: the split
    /// is written in place and is only meaningful once its layer exists).
    pub fn create(split: &Path) -> io::Result<Recorder> {
        let file = File::create(split)?;
        let out = GzEncoder::new(BufWriter::new(file), flate2::Compression::fast());
        let state = State {
            pos: 0,
            skip: (0, 0),
            pending: Vec::new(),
            out,
            error: None,
            records: 0,
            files: BTreeMap::new(),
            saved: BTreeMap::new(),
            sidecar: None,
            sidecar_len: 0,
        };
        Ok(Recorder { state: Rc::new(RefCell::new(state)), split: split.to_path_buf() })
    }

    /// Wraps the (uncompressed) tar stream: everything read through it is
    /// recorded, except the content of files announced with [`Recorder::file`].
    pub fn reader<R: Read>(&self, inner: R) -> RecordingReader<R> {
        RecordingReader { inner, state: self.state.clone() }
    }

    /// The entry being unpacked is a regular file at `rel` in the layer,
    /// whose `size` content bytes start at stream offset `start` and will be
    /// found in the layer directory afterwards.
    pub fn file(&self, rel: &Path, start: u64, size: u64) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.flush_pending()?;
        let path = rel.as_os_str().as_bytes();
        state.out.write_all(&[FILE])?;
        state.out.write_all(&size.to_le_bytes())?;
        state.out.write_all(&(path.len() as u32).to_le_bytes())?;
        state.out.write_all(path)?;
        let record = state.records;
        state.records += 1;
        state.files.insert(rel.to_path_buf(), record);
        state.skip = (start, start + size);
        Ok(())
    }

    /// An entry is about to replace what is at `rel` in `root` (with
    /// `keep_dir`, a directory there stays): files recorded by reference that
    /// would go are saved in the sidecar first.
    pub fn before_replacing(&self, root: &Path, rel: &Path, keep_dir: bool) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        let doomed: Vec<(PathBuf, u64)> = match std::fs::symlink_metadata(root.join(rel)) {
            Ok(meta) if meta.is_dir() && keep_dir => return Ok(()),
            Ok(meta) if meta.is_dir() => state
                .files
                .range(rel.to_path_buf()..)
                .take_while(|(p, _)| p.starts_with(rel))
                .map(|(p, r)| (p.clone(), *r))
                .collect(),
            Ok(_) => state.files.get(rel).map(|r| vec![(rel.to_path_buf(), *r)]).unwrap_or_default(),
            Err(_) => return Ok(()),
        };
        for (path, record) in doomed {
            if state.sidecar.is_none() {
                state.sidecar = Some(
                    File::options()
                        .create(true)
                        .truncate(true)
                        .read(true)
                        .write(true)
                        .open(sidecar_path(&self.split))?,
                );
            }
            let offset = state.sidecar_len;
            let copied = io::copy(&mut File::open(root.join(&path))?, state.sidecar.as_mut().expect("opened above"))?;
            state.sidecar_len += copied;
            state.saved.insert(record, (offset, copied));
            state.files.remove(&path);
        }
        Ok(())
    }

    /// Records the rest and closes the file. Call after the stream was read
    /// to its end.
    pub fn finish(self) -> io::Result<()> {
        let mut state =
            Rc::try_unwrap(self.state).map_err(|_| io::Error::other("tar-split recorder still in use"))?.into_inner();
        if let Some(err) = state.error.take() {
            return Err(err);
        }
        state.flush_pending()?;
        state.out.write_all(&[END])?;
        state.out.finish()?.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        if let Some(mut sidecar) = state.sidecar {
            let table = serde_json::to_vec(&state.saved).map_err(io::Error::other)?;
            sidecar.write_all(&table)?;
            sidecar.write_all(&(table.len() as u64).to_le_bytes())?;
            sidecar.sync_all()?;
        }
        Ok(())
    }
}

/// A reader that records what passes through it into a [`Recorder`].
pub struct RecordingReader<R> {
    inner: R,
    state: Rc<RefCell<State>>,
}

impl<R> RecordingReader<R> {
    /// The wrapped stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

impl<R: Read> Read for RecordingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut state = self.state.borrow_mut();
        let (start, end) = (state.pos, state.pos + n as u64);
        let (skip_start, skip_end) = state.skip;
        // The parts of [start, end) outside the file content range.
        let before = start..end.min(skip_start).max(start);
        let after = start.max(skip_end).min(end)..end;
        for range in [before, after] {
            if range.start < range.end {
                let from = (range.start - start) as usize;
                let to = (range.end - start) as usize;
                state.pending.extend_from_slice(&buf[from..to]);
            }
        }
        state.pos = end;
        if state.pending.len() >= META_CHUNK {
            if let Err(err) = state.flush_pending() {
                state.error.get_or_insert(err);
            }
        }
        Ok(n)
    }
}

/// Writes the layer's original tar stream, rebuilt from `layer_dir` and its
/// tar-split, to `out`. Returns the number of bytes written. Fails with
/// `NotFound` when the layer has no tar-split (stored by an older Berth).
pub fn write_tar(layer_dir: &Path, out: &mut impl Write) -> io::Result<u64> {
    let mut records = Records::open(layer_dir)?;
    let mut sidecar = match File::open(sidecar_path(&records.split)) {
        Ok(mut file) => {
            let len = file.seek(SeekFrom::End(-8))?;
            let mut tail = [0u8; 8];
            file.read_exact(&mut tail)?;
            let table_len = u64::from_le_bytes(tail);
            file.seek(SeekFrom::Start(len - table_len))?;
            let mut table = vec![0u8; table_len as usize];
            file.read_exact(&mut table)?;
            let saved: BTreeMap<u64, (u64, u64)> = serde_json::from_slice(&table).map_err(io::Error::other)?;
            Some((file, saved))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => return Err(err),
    };
    let mut written = 0u64;
    let mut record = 0u64;
    while let Some(entry) = records.next()? {
        match entry {
            Entry::Meta(bytes) => {
                out.write_all(&bytes)?;
                written += bytes.len() as u64;
            }
            Entry::File { size, path } => {
                let copied = match sidecar.as_mut().and_then(|(file, saved)| Some((file, *saved.get(&record)?))) {
                    Some((file, (offset, len))) => {
                        file.seek(SeekFrom::Start(offset))?;
                        io::copy(&mut file.take(len), out)?
                    }
                    None => {
                        let path = layer_dir.join(std::ffi::OsStr::from_bytes(&path));
                        // The layer is ours and immutable, and its paths were
                        // checked at unpack; O_NOFOLLOW is belt and braces.
                        let file = File::options().read(true).custom_flags(libc::O_NOFOLLOW).open(&path)?;
                        io::copy(&mut file.take(size), out)?
                    }
                };
                if copied != size {
                    return Err(records.corrupt("a file's size changed since the layer was unpacked"));
                }
                written += copied;
            }
        }
        record += 1;
    }
    Ok(written)
}

/// One record of a tar-split.
enum Entry {
    Meta(Vec<u8>),
    File { size: u64, path: Vec<u8> },
}

/// Reads a layer's tar-split record by record.
struct Records {
    split: PathBuf,
    reader: BufReader<GzDecoder<File>>,
}

impl Records {
    fn open(layer_dir: &Path) -> io::Result<Records> {
        let split = split_path(layer_dir);
        let reader = BufReader::new(GzDecoder::new(File::open(&split)?));
        Ok(Records { split, reader })
    }

    fn corrupt(&self, what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("tar-split {}: {what}", self.split.display()))
    }

    /// The next record; None at the end record.
    fn next(&mut self) -> io::Result<Option<Entry>> {
        let mut tag = [0u8; 1];
        self.reader.read_exact(&mut tag)?;
        match tag[0] {
            META => {
                let mut bytes = vec![0u8; read_u32(&mut self.reader)? as usize];
                self.reader.read_exact(&mut bytes)?;
                Ok(Some(Entry::Meta(bytes)))
            }
            FILE => {
                let size = read_u64(&mut self.reader)?;
                let mut path = vec![0u8; read_u32(&mut self.reader)? as usize];
                self.reader.read_exact(&mut path)?;
                Ok(Some(Entry::File { size, path }))
            }
            END => Ok(None),
            _ => Err(self.corrupt("unknown record")),
        }
    }
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// The length of the tar stream [`write_tar`] would write, from the split
/// alone (file contents are not read).
pub fn tar_size(layer_dir: &Path) -> io::Result<u64> {
    let mut records = Records::open(layer_dir)?;
    let mut size = 0u64;
    while let Some(entry) = records.next()? {
        size += match entry {
            Entry::Meta(bytes) => bytes.len() as u64,
            Entry::File { size, .. } => size,
        };
    }
    Ok(size)
}
