//! A small mutation fuzzer that runs on stable Rust (cargo-fuzz needs
//! nightly): every corpus entry as it is, then mutants of them for a
//! bounded time. Mutations: bit flips, interesting bytes, insertions,
//! deletions, splices between entries, and for JSON targets type swaps
//! (any value replaced by a string, number, huge number, object, array,
//! null...) and Docker's field names inserted at any depth; for tar targets
//! header fields rewritten (names like `.wh..` or `../x`, type flags, link
//! names, sizes) with the checksum fixed, so that the reader gets past it.
//!
//! Deterministic: the PRNG is seeded from the target's name (or
//! BERTH_FUZZ_SEED), so a failure names its seed and iteration, and the
//! input is written next to the build for replaying.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_engine::docker_json::{Kind, Struct};
use serde_json::{json, Value};

/// How long each target runs: BERTH_FUZZ_SECS (default 2).
pub fn budget() -> Duration {
    let secs = std::env::var("BERTH_FUZZ_SECS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

pub struct Failure {
    pub input: Vec<u8>,
    pub message: String,
    pub seed: u64,
    pub iteration: u64,
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (seed {}, iteration {}; input: {:?})",
            self.message,
            self.seed,
            self.iteration,
            String::from_utf8_lossy(&self.input[..self.input.len().min(600)])
        )
    }
}

/// What the inputs are, for the mutations that know their structure.
#[derive(Clone, Copy)]
pub enum Format {
    /// JSON bodies of this Docker type.
    Json(&'static Struct),
    /// Tar streams (possibly compressed).
    Tar,
}

pub struct Fuzzer {
    rng: fastrand::Rng,
    seed: u64,
    corpus: Vec<Vec<u8>>,
    format: Format,
    field_names: Vec<&'static str>,
}

impl Fuzzer {
    /// A fuzzer over the files in `corpus_dir`.
    pub fn new(name: &str, corpus_dir: &Path, format: Format) -> Fuzzer {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus_dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", corpus_dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        let corpus: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
        assert!(!corpus.is_empty(), "empty corpus {}", corpus_dir.display());
        let seed = std::env::var("BERTH_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
        });
        let mut field_names = Vec::new();
        if let Format::Json(schema) = format {
            collect_names(schema, &mut field_names);
        }
        Fuzzer { rng: fastrand::Rng::with_seed(seed), seed, corpus, format, field_names }
    }

    /// Runs `target` on the corpus, then on mutants until `budget` is
    /// spent. `target` returns Err for an input that breaks the property
    /// (a panic counts as one too).
    pub fn run(
        &mut self,
        budget: Duration,
        mut target: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<u64, Failure> {
        let started = Instant::now();
        let mut iteration = 0u64;
        loop {
            let input = match self.corpus.get(iteration as usize) {
                Some(entry) => entry.clone(),
                None if started.elapsed() >= budget => return Ok(iteration),
                None => self.mutant(),
            };
            let outcome = catch_unwind(AssertUnwindSafe(|| target(&input)));
            let message = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(broken)) => Some(broken),
                Err(payload) => Some(format!("panicked: {}", berth_engine::panics::message(&*payload))),
            };
            if let Some(message) = message {
                return Err(Failure { input, message, seed: self.seed, iteration });
            }
            iteration += 1;
        }
    }

    fn mutant(&mut self) -> Vec<u8> {
        let mut data = self.corpus[self.rng.usize(..self.corpus.len())].clone();
        for _ in 0..self.rng.usize(1..=4) {
            data = match self.format {
                _ if self.rng.bool() => self.mutate_bytes(data),
                Format::Json(_) => self.mutate_json(data),
                Format::Tar => self.mutate_tar_header(data),
            };
        }
        data
    }

    fn mutate_bytes(&mut self, mut data: Vec<u8>) -> Vec<u8> {
        const INTERESTING: &[u8] = b"\x00\xff\x7f\x80\"\\{}[]:,.-/0 9eE\n";
        let at = |rng: &mut fastrand::Rng, data: &Vec<u8>| rng.usize(..=data.len());
        match self.rng.u8(..6) {
            0 if !data.is_empty() => {
                let i = self.rng.usize(..data.len());
                data[i] ^= 1 << self.rng.u8(..8);
            }
            1 if !data.is_empty() => {
                let i = self.rng.usize(..data.len());
                data[i] = INTERESTING[self.rng.usize(..INTERESTING.len())];
            }
            2 => {
                let i = at(&mut self.rng, &data);
                let count = self.rng.usize(1..=8);
                let bytes: Vec<u8> = (0..count).map(|_| self.rng.u8(..)).collect();
                data.splice(i..i, bytes);
            }
            3 if !data.is_empty() => {
                let start = self.rng.usize(..data.len());
                let end = (start + self.rng.usize(1..=64)).min(data.len());
                data.drain(start..end);
            }
            4 => {
                // Splice: this entry's head, another's tail.
                let other = &self.corpus[self.rng.usize(..self.corpus.len())];
                let cut = at(&mut self.rng, &data);
                let from = self.rng.usize(..=other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            _ => {
                // A block of zeros or 0xff where a length or a header field may be.
                let i = at(&mut self.rng, &data);
                let fill = if self.rng.bool() { 0 } else { 0xff };
                let end = (i + self.rng.usize(1..=12)).min(data.len());
                data[i..end].fill(fill);
            }
        }
        data
    }

    fn mutate_json(&mut self, data: Vec<u8>) -> Vec<u8> {
        let Ok(mut value) = serde_json::from_slice::<Value>(&data) else { return self.mutate_bytes(data) };
        let mut count = 0;
        count_nodes(&value, &mut count);
        let target = self.rng.usize(..count);
        let replacement = self.interesting_value();
        if self.rng.bool() || self.field_names.is_empty() {
            replace_node(&mut value, &mut { target }, replacement);
        } else {
            let name = self.field_names[self.rng.usize(..self.field_names.len())];
            insert_field(&mut value, &mut { target }, name, replacement);
        }
        serde_json::to_vec(&value).unwrap()
    }

    /// Rewrites one field of a ustar/GNU header and fixes its checksum.
    fn mutate_tar_header(&mut self, mut data: Vec<u8>) -> Vec<u8> {
        const NAMES: &[&str] = &[
            ".wh..",
            ".wh.",
            ".wh...",
            ".wh..wh..opq",
            "a/.wh..",
            "../x",
            "a/../../x",
            "/abs",
            ".",
            "..",
            "a//b",
            "",
            "bin",
            "bin/sh",
            "etc/passwd",
            "x/",
            "dev/null",
        ];
        const TYPES: &[u8] = b"0125670gxLKS";
        let headers: Vec<usize> =
            (0..data.len() / 512).map(|i| i * 512).filter(|&o| data.get(o + 257..o + 262) == Some(b"ustar")).collect();
        if headers.is_empty() {
            return self.mutate_bytes(data);
        }
        let header = &mut data[headers[self.rng.usize(..headers.len())]..][..512];
        let mut set = |range: std::ops::Range<usize>, value: &[u8]| {
            header[range.clone()].fill(0);
            let n = value.len().min(range.len());
            header[range.start..range.start + n].copy_from_slice(&value[..n]);
        };
        let name = NAMES[self.rng.usize(..NAMES.len())].as_bytes();
        match self.rng.u8(..5) {
            0 | 1 => set(0..100, name),
            2 => set(156..157, &[TYPES[self.rng.usize(..TYPES.len())]]),
            3 => set(157..257, name),
            _ => {
                let size = format!("{:011o}", self.rng.u64(..1 << 33));
                set(124..136, size.as_bytes())
            }
        }
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|&b| b as u32).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        data
    }

    fn interesting_value(&mut self) -> Value {
        match self.rng.u8(..14) {
            0 => json!("x"),
            1 => json!(""),
            2 => json!(0),
            3 => json!(-1),
            4 => json!(1.5),
            5 => json!(9_223_372_036_854_775_807i64),
            6 => json!(18_446_744_073_709_551_615u64),
            7 => json!(-9_223_372_036_854_775_808i64),
            8 => json!({}),
            9 => json!({"a": {"b": 1}}),
            10 => json!([]),
            11 => json!([1, "x", null]),
            12 => Value::Null,
            _ => json!(true),
        }
    }
}

fn collect_names(schema: &'static Struct, names: &mut Vec<&'static str>) {
    fn walk(kind: &'static Kind, names: &mut Vec<&'static str>) {
        match kind {
            Kind::Struct(inner) => collect_names(inner, names),
            Kind::Slice(_, element) | Kind::Map(_, element) => walk(element, names),
            _ => {}
        }
    }
    for (name, kind) in schema.fields {
        if !names.contains(name) {
            names.push(name);
            walk(kind, names);
        }
    }
}

fn count_nodes(value: &Value, count: &mut usize) {
    *count += 1;
    match value {
        Value::Array(items) => items.iter().for_each(|v| count_nodes(v, count)),
        Value::Object(map) => map.values().for_each(|v| count_nodes(v, count)),
        _ => {}
    }
}

/// Replaces the `index`th node (pre-order) of `value`.
fn replace_node(value: &mut Value, index: &mut usize, replacement: Value) -> bool {
    if *index == 0 {
        *value = replacement;
        return true;
    }
    *index -= 1;
    let children: Vec<&mut Value> = match value {
        Value::Array(items) => items.iter_mut().collect(),
        Value::Object(map) => map.values_mut().collect(),
        _ => return false,
    };
    for child in children {
        if replace_node(child, index, replacement.clone()) {
            return true;
        }
    }
    false
}

/// Adds `name: replacement` to the first object at or after the `index`th node.
fn insert_field(value: &mut Value, index: &mut usize, name: &str, replacement: Value) -> bool {
    if *index == 0 {
        if let Value::Object(map) = value {
            map.insert(name.to_string(), replacement);
            return true;
        }
    } else {
        *index -= 1;
    }
    let children: Vec<&mut Value> = match value {
        Value::Array(items) => items.iter_mut().collect(),
        Value::Object(map) => map.values_mut().collect(),
        _ => return false,
    };
    for child in children {
        if insert_field(child, index, name, replacement.clone()) {
            return true;
        }
    }
    false
}
