//! The disk spool: `rdrunner_actors::Spool` on append-only segment files, so
//! that no report is lost across a crash or a `kill -9` of the runner.
//!
//! Layout of the spool directory:
//! - `seg-NNNNNNNNNN.spool`: reports, one framed record each, appended in
//!   order; a new segment is started at every open and when one grows past
//!   `segmentBytes`.
//! - `acks.log`: framed ack / forget records (the durable ack state),
//!   rewritten whole when it grows. An ack record also carries the progress
//!   of the node steps that changed since the operation's previous one
//!   (stdout and stderr lines spooled, last node state) and the seq it
//!   counts through, so that the progress outlives the segments holding
//!   the reports it was counted from.
//! - `claims.log`: the claim journal, framed `intent` / `claimed` /
//!   `release` records; an intent is made durable before its claim request
//!   is sent. Rewritten whole at open and when it grows.
//! - `replica-id`: the replica id this process registered as (written
//!   atomically), for the next process to name in `POST /resume`.
//! - `step-key`: a random secret (64 hex digits) the names of detached
//!   steps' directories on the nodes are derived from, made once.
//!
//! A record is `len: u32 LE | crc32(payload): u32 LE | payload (JSON)`. A
//! crash can leave a torn record at the end of a file: it is detected by its
//! length or checksum and cut on open. Memory holds an index (segment and
//! offset per unacked report), not the reports. A segment file is deleted
//! once every record in it is acked or forgotten; the ack state is made
//! durable before that, so an acked report is never needed again.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rdrunner_actors::model::Stream;
use rdrunner_actors::model::{EncodedReport, Report};
use rdrunner_actors::{
    JournalEntry, Mark, NodeState, ProgressMap, Spool, SpoolError, SpooledOperation, StepProgress,
};
use serde::{Deserialize, Serialize};

use crate::private_dir;

/// When the disk spool calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every append.
    Always,
    /// In `flush`, before each batch is sent.
    Batch,
    /// Never (the OS decides).
    Never,
}

impl FsyncPolicy {
    /// The policy named as in the configuration (`always`, `batch`,
    /// `never`); `None` for any other name.
    pub fn from_name(name: &str) -> Option<FsyncPolicy> {
        match name {
            "always" => Some(FsyncPolicy::Always),
            "batch" => Some(FsyncPolicy::Batch),
            "never" => Some(FsyncPolicy::Never),
            _ => None,
        }
    }

    /// The name the configuration uses for the policy.
    pub fn name(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Batch => "batch",
            FsyncPolicy::Never => "never",
        }
    }
}

/// Where the spool lives and how it syncs (`[spool]`), its defaults
/// written here.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// Size at which a new segment file is started (bytes).
    pub segment_bytes: u64,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        SpoolSettings {
            dir: PathBuf::from("./runner/spool"),
            fsync: FsyncPolicy::Batch,
            segment_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Bytes before each record's payload: length and checksum.
const HEADER: usize = 8;
/// A length above this is treated as a torn or corrupt header.
const MAX_RECORD: usize = 64 * 1024 * 1024;
/// `acks.log` is rewritten from the state in memory past this size.
const ACK_LOG_COMPACT_BYTES: u64 = 1024 * 1024;
const ACK_LOG: &str = "acks.log";
const CLAIM_LOG: &str = "claims.log";
/// `claims.log` is rewritten from the journal in memory past this size.
const CLAIM_LOG_COMPACT_BYTES: u64 = 256 * 1024;
const REPLICA_FILE: &str = "replica-id";
/// The secret the names of detached steps' directories are derived from.
const STEP_KEY_FILE: &str = "step-key";
/// Lock file held by the process that has the spool open.
const LOCK_FILE: &str = "LOCK";

/// Frames `payload` onto `out`.
fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Splits `bytes` into records: (offset, payload) of every whole, intact
/// record, and the length of the valid prefix (where a torn tail starts).
fn unframe(bytes: &[u8]) -> (Vec<(u64, &[u8])>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        if len > MAX_RECORD || bytes.len() - at - HEADER < len {
            break;
        }
        let payload = &bytes[at + HEADER..at + HEADER + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        out.push((at as u64, payload));
        at += HEADER + len;
    }
    (out, at)
}

/// A record of `acks.log`.
#[derive(Debug, Serialize, Deserialize)]
struct AckRecord {
    op: String,
    #[serde(default)]
    acked: u64,
    #[serde(default)]
    last: u64,
    #[serde(default)]
    terminal: bool,
    /// The operation is forgotten; its records in older segments are dead.
    #[serde(default)]
    forget: bool,
    /// The step progress in this record and the earlier ones covers every
    /// report up to this seq (0 in records of spools that kept none).
    #[serde(default, skip_serializing_if = "is_zero")]
    through: u64,
    /// The progress of the steps that changed since the previous record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    steps: Vec<StepRecord>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One node step's progress in `acks.log`.
#[derive(Debug, Serialize, Deserialize)]
struct StepRecord {
    step: u32,
    node: String,
    #[serde(default)]
    out: u64,
    #[serde(default)]
    err: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<NodeState>,
    /// stdout's mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    om: Option<Mark>,
    /// stderr's mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    em: Option<Mark>,
    /// When the step started (the time of its `running` report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<String>,
}

impl StepRecord {
    fn of(p: &StepProgress) -> Self {
        StepRecord {
            step: p.step,
            node: p.node.clone(),
            out: p.stdout_lines,
            err: p.stderr_lines,
            state: p.state.clone(),
            om: p.stdout_mark,
            em: p.stderr_mark,
            at: p.started.clone(),
        }
    }

    fn progress(self) -> StepProgress {
        StepProgress {
            step: self.step,
            node: self.node,
            stdout_lines: self.out,
            stderr_lines: self.err,
            state: self.state,
            stdout_mark: self.om,
            stderr_mark: self.em,
            started: self.at,
        }
    }
}

/// What a record of `claims.log` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ClaimKind {
    /// A claim is about to be sent.
    Intent,
    /// The claim was answered with the operation.
    Claimed,
    /// Refused, not this runner's, or its terminal report acked.
    Release,
}

/// A record of `claims.log`.
#[derive(Debug, Serialize, Deserialize)]
struct ClaimRecord {
    op: String,
    #[serde(default)]
    replica: String,
    kind: ClaimKind,
}

/// Replays `claims.log` records onto a journal.
fn replay_claims(bytes: &[u8]) -> BTreeMap<String, JournalEntry> {
    let mut journal = BTreeMap::new();
    for (_, payload) in unframe(bytes).0 {
        let Ok(rec) = serde_json::from_slice::<ClaimRecord>(payload) else {
            continue;
        };
        match rec.kind {
            ClaimKind::Release => {
                journal.remove(&rec.op);
            }
            kind => {
                journal.insert(
                    rec.op.clone(),
                    JournalEntry {
                        op_id: rec.op,
                        replica_id: rec.replica,
                        answered: kind == ClaimKind::Claimed,
                    },
                );
            }
        }
    }
    journal
}

/// Writes `bytes` as `dir/name` atomically (temp file, fsync when `sync`,
/// rename, fsync of the directory), mode 0600; returns the file opened for
/// appending.
fn replace_file(dir: &Path, name: &str, bytes: &[u8], sync: bool) -> Result<File, SpoolError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let write = || -> std::io::Result<File> {
        // A temp file left by a crash keeps its old mode: start afresh.
        let _ = std::fs::remove_file(&tmp);
        let mut f = private_dir::file_options()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        OpenOptions::new().append(true).open(&path)
    };
    let file = write().map_err(|e| io_err(&path, "rewriting", e))?;
    if sync {
        fsync_dir(dir)?;
    }
    Ok(file)
}

/// Where one spooled report is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    segment: u64,
    offset: u64,
}

#[derive(Debug, Default)]
struct OpIndex {
    last_seq: u64,
    acked: u64,
    terminal: bool,
    /// Locations of seqs `acked+1 ..= last_seq`, in order.
    live: VecDeque<Loc>,
    /// Where each node step stands, from every report appended.
    progress: ProgressMap,
    /// Reports up to this seq are counted in `progress`.
    counted: u64,
    /// Steps whose progress changed since the last ack record.
    dirty: BTreeSet<(u32, String)>,
}

impl OpIndex {
    /// Counts `report` (seq `counted + 1` or later) into the progress.
    fn count(&mut self, report: &Report) {
        if report.seq <= self.counted {
            return;
        }
        self.counted = report.seq;
        if let Some(key) = self.progress.record(report) {
            self.dirty.insert(key);
        }
    }

    /// The progress records to write with an ack record: the changed ones.
    fn take_dirty(&mut self) -> Vec<StepRecord> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|(step, node)| self.progress.get(step, &node).map(StepRecord::of))
            .collect()
    }
}

/// The file spool. See the module documentation for the format.
pub struct DiskSpool {
    /// Held for the spool's lifetime: two processes appending to one spool
    /// would interleave their records. The kernel drops the lock when the
    /// process dies, `kill -9` included.
    _lock: File,
    dir: PathBuf,
    fsync: FsyncPolicy,
    segment_bytes: u64,
    ops: BTreeMap<String, OpIndex>,
    /// Forgotten operations and the newest segment that may hold their
    /// records; kept until that segment is gone.
    forgotten: HashMap<String, u64>,
    /// Live (unacked) records per segment.
    segments: BTreeMap<u64, usize>,
    readers: HashMap<u64, File>,
    active: File,
    active_id: u64,
    active_len: u64,
    acks: File,
    acks_len: u64,
    /// The claim journal, as replayed from `claims.log` and kept since.
    journal: BTreeMap<String, JournalEntry>,
    claims: File,
    claims_len: u64,
    /// Written since the last fsync.
    dirty_segment: bool,
    dirty_acks: bool,
    /// Bytes of torn records cut when the spool was opened.
    cut_on_open: u64,
}

impl std::fmt::Debug for DiskSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskSpool")
            .field("dir", &self.dir)
            .field("operations", &self.ops.len())
            .field("segments", &self.segments.len())
            .finish()
    }
}

fn err(path: &Path, message: impl std::fmt::Display) -> SpoolError {
    SpoolError::new(path.display().to_string(), message.to_string())
}

/// `what` failed on `path` with the I/O error `e`, kept as the source.
fn io_err(path: &Path, what: &str, e: std::io::Error) -> SpoolError {
    SpoolError::io(path.display().to_string(), what, e)
}

/// Takes the spool directory's lock file, refusing a directory that another
/// live process holds.
fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let file = private_dir::file_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .and_then(|f| private_dir::tighten_file(&f).map(|()| f))
        .map_err(|e| io_err(&path, "", e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(err(
            dir,
            "is in use by another rdrunner process; every replica needs a spool directory of its own (set spool.dir, or start each replica in its own working directory)",
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(&path, "cannot lock", e)),
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("seg-{id:010}.spool"))
}

fn fsync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, "fsync of the directory", e))
}

/// Reads `path` whole and cuts a torn tail off it; returns the bytes kept
/// and how many were cut.
fn read_and_cut(path: &Path, fsync: FsyncPolicy) -> Result<(Vec<u8>, u64), SpoolError> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .and_then(|f| private_dir::tighten_file(&f).map(|()| f))
        .map_err(|e| io_err(path, "", e))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(|e| io_err(path, "", e))?;
    let (_, valid) = unframe(&bytes);
    let cut = (bytes.len() - valid) as u64;
    if cut > 0 {
        f.set_len(valid as u64)
            .and_then(|_| {
                if fsync == FsyncPolicy::Never {
                    Ok(())
                } else {
                    f.sync_all()
                }
            })
            .map_err(|e| io_err(path, "cutting a torn record", e))?;
        bytes.truncate(valid);
    }
    Ok((bytes, cut))
}

impl DiskSpool {
    /// Opens (or creates) the spool in `dir`: replays the ack state and the
    /// segments, cuts torn tails, and starts a new segment for appends. The
    /// directory is made 0700 and every file in it 0600 (the reports may
    /// carry secrets a step printed), whatever the umask and whatever their
    /// modes were.
    pub fn open(dir: &Path, fsync: FsyncPolicy, segment_bytes: u64) -> Result<Self, SpoolError> {
        private_dir::ensure_dir(dir)
            .map_err(|e| io_err(dir, "cannot create it or make it private", e))?;
        let lock = lock_dir(dir)?;
        let mut cut_on_open = 0;

        // The ack state.
        let ack_path = dir.join(ACK_LOG);
        if !ack_path.exists() {
            private_dir::file_options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&ack_path)
                .map_err(|e| io_err(&ack_path, "", e))?;
        }
        let (ack_bytes, cut) = read_and_cut(&ack_path, fsync)?;
        cut_on_open += cut;
        let mut ops: BTreeMap<String, OpIndex> = BTreeMap::new();
        let mut forgotten: HashMap<String, u64> = HashMap::new();
        for (_, payload) in unframe(&ack_bytes).0 {
            let Ok(rec) = serde_json::from_slice::<AckRecord>(payload) else {
                continue;
            };
            if rec.forget {
                ops.remove(&rec.op);
                forgotten.insert(rec.op, u64::MAX);
            } else {
                forgotten.remove(&rec.op);
                let op = ops.entry(rec.op).or_default();
                op.acked = op.acked.max(rec.acked);
                op.last_seq = op.last_seq.max(rec.last).max(op.acked);
                op.terminal |= rec.terminal;
                op.counted = op.counted.max(rec.through);
                for step in rec.steps {
                    op.progress.set(step.progress());
                }
            }
        }

        // The segments, oldest first.
        let mut ids: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| io_err(dir, "", e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("seg-")?
                    .strip_suffix(".spool")?
                    .parse()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        let mut segments = BTreeMap::new();
        for &id in &ids {
            let path = segment_path(dir, id);
            let (bytes, cut) = read_and_cut(&path, fsync)?;
            cut_on_open += cut;
            let mut live = 0;
            for (offset, payload) in unframe(&bytes).0 {
                let Ok(report) = serde_json::from_slice::<Report>(payload) else {
                    continue;
                };
                if let Some(last) = forgotten.get_mut(&report.op_id) {
                    *last = id;
                    continue;
                }
                let op = ops.entry(report.op_id.clone()).or_default();
                if report.seq <= op.acked {
                    op.terminal |= report.is_terminal();
                    op.count(&report);
                    continue;
                }
                // Seqs of one operation are contiguous; anything else is a
                // duplicate written before a crash and is skipped.
                if report.seq != op.acked + op.live.len() as u64 + 1 {
                    continue;
                }
                op.live.push_back(Loc {
                    segment: id,
                    offset,
                });
                op.last_seq = op.last_seq.max(report.seq);
                op.terminal |= report.is_terminal();
                op.count(&report);
                live += 1;
            }
            segments.insert(id, live);
        }
        // Forget markers whose records are all gone are dropped.
        forgotten.retain(|_, last| *last != u64::MAX);

        let active_id = ids.last().map_or(1, |l| l + 1);
        let active_path = segment_path(dir, active_id);
        let active = private_dir::file_options()
            .create_new(true)
            .append(true)
            .open(&active_path)
            .map_err(|e| io_err(&active_path, "", e))?;
        segments.insert(active_id, 0);
        let acks = OpenOptions::new()
            .append(true)
            .open(&ack_path)
            .map_err(|e| io_err(&ack_path, "", e))?;

        // The claim journal, compacted at once.
        let claim_path = dir.join(CLAIM_LOG);
        let journal = if claim_path.exists() {
            let (bytes, cut) = read_and_cut(&claim_path, fsync)?;
            cut_on_open += cut;
            replay_claims(&bytes)
        } else {
            BTreeMap::new()
        };
        let claim_bytes = claim_log_bytes(&journal);
        let claims = replace_file(dir, CLAIM_LOG, &claim_bytes, fsync != FsyncPolicy::Never)?;
        let mut spool = DiskSpool {
            _lock: lock,
            dir: dir.to_owned(),
            fsync,
            segment_bytes,
            ops,
            forgotten,
            segments,
            readers: HashMap::new(),
            active,
            active_id,
            active_len: 0,
            acks_len: ack_bytes.len() as u64,
            acks,
            journal,
            claims,
            claims_len: claim_bytes.len() as u64,
            dirty_segment: false,
            dirty_acks: false,
            cut_on_open,
        };
        if fsync != FsyncPolicy::Never {
            fsync_dir(dir)?;
        }
        spool.drop_dead_segments()?;
        if spool.acks_len > 0 {
            spool.compact_ack_log()?;
        }
        Ok(spool)
    }

    /// The 32-byte secret kept in `step-key`, made at the first call: the
    /// names of the directories of detached steps on the nodes are derived
    /// from it, so that a restarted runner finds them again and nobody
    /// else can tell them in advance.
    pub fn step_key(&self) -> Result<[u8; 32], SpoolError> {
        let path = self.dir.join(STEP_KEY_FILE);
        let parse = |text: &str| -> Option<[u8; 32]> {
            let text = text.trim();
            if text.len() != 64 {
                return None;
            }
            let mut key = [0u8; 32];
            for (i, b) in key.iter_mut().enumerate() {
                *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            Some(key)
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                return parse(&text).ok_or_else(|| {
                    err(&path, "not 64 hexadecimal digits; remove it to make a new key (the steps a previous process left running can then not be re-attached to)")
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path, "", e)),
        }
        let key: [u8; 32] = rand::random();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        replace_file(&self.dir, STEP_KEY_FILE, hex.as_bytes(), true)?;
        Ok(key)
    }

    /// Bytes of torn records cut when the spool was opened.
    pub fn cut_on_open(&self) -> u64 {
        self.cut_on_open
    }

    /// Segment files present (the active one included).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Reports held and not yet acked, across operations.
    pub fn unacked(&self) -> usize {
        self.ops.values().map(|o| o.live.len()).sum()
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        if self.fsync != FsyncPolicy::Never && self.dirty_segment {
            self.active
                .sync_data()
                .map_err(|e| io_err(&segment_path(&self.dir, self.active_id), "", e))?;
        }
        self.dirty_segment = false;
        self.active_id += 1;
        let path = segment_path(&self.dir, self.active_id);
        self.active = private_dir::file_options()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, "", e))?;
        self.active_len = 0;
        self.segments.insert(self.active_id, 0);
        if self.fsync != FsyncPolicy::Never {
            fsync_dir(&self.dir)?;
        }
        self.drop_dead_segments()
    }

    /// Deletes every segment but the active one that holds no live record.
    fn drop_dead_segments(&mut self) -> Result<(), SpoolError> {
        let dead: Vec<u64> = self
            .segments
            .iter()
            .filter(|(id, live)| **live == 0 && **id != self.active_id)
            .map(|(id, _)| *id)
            .collect();
        if dead.is_empty() {
            return Ok(());
        }
        // The acks that made these records dead must survive a crash first.
        self.sync_acks()?;
        for id in dead {
            let path = segment_path(&self.dir, id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path, "cannot delete", e)),
            }
            self.segments.remove(&id);
            self.readers.remove(&id);
        }
        let oldest = self
            .segments
            .keys()
            .next()
            .copied()
            .unwrap_or(self.active_id);
        self.forgotten.retain(|_, last| *last >= oldest);
        Ok(())
    }

    fn sync_acks(&mut self) -> Result<(), SpoolError> {
        if self.dirty_acks && self.fsync != FsyncPolicy::Never {
            self.acks
                .sync_data()
                .map_err(|e| io_err(&self.dir.join(ACK_LOG), "", e))?;
        }
        self.dirty_acks = false;
        Ok(())
    }

    fn write_ack(&mut self, rec: &AckRecord) -> Result<(), SpoolError> {
        let mut buf = Vec::new();
        frame(&serde_json::to_vec(rec).expect("serializable"), &mut buf);
        self.acks
            .write_all(&buf)
            .map_err(|e| io_err(&self.dir.join(ACK_LOG), "", e))?;
        self.acks_len += buf.len() as u64;
        self.dirty_acks = true;
        if self.fsync == FsyncPolicy::Always {
            self.sync_acks()?;
        }
        if self.acks_len > ACK_LOG_COMPACT_BYTES {
            self.compact_ack_log()?;
        }
        Ok(())
    }

    /// Rewrites `acks.log` with only the current state (write, fsync, rename).
    fn compact_ack_log(&mut self) -> Result<(), SpoolError> {
        let mut buf = Vec::new();
        for (id, op) in &mut self.ops {
            op.dirty.clear();
            let rec = AckRecord {
                op: id.clone(),
                acked: op.acked,
                last: op.last_seq,
                terminal: op.terminal,
                forget: false,
                through: op.counted,
                steps: op.progress.values().map(StepRecord::of).collect(),
            };
            frame(&serde_json::to_vec(&rec).expect("serializable"), &mut buf);
        }
        for id in self.forgotten.keys() {
            let rec = AckRecord {
                op: id.clone(),
                acked: 0,
                last: 0,
                terminal: false,
                forget: true,
                through: 0,
                steps: Vec::new(),
            };
            frame(&serde_json::to_vec(&rec).expect("serializable"), &mut buf);
        }
        let path = self.dir.join(ACK_LOG);
        let tmp = self.dir.join("acks.log.tmp");
        let sync = self.fsync != FsyncPolicy::Never;
        let write = || -> std::io::Result<File> {
            // A temp file left by a crash keeps its old mode: start afresh.
            let _ = std::fs::remove_file(&tmp);
            let mut f = private_dir::file_options()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(&buf)?;
            if sync {
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
            OpenOptions::new().append(true).open(&path)
        };
        self.acks = write().map_err(|e| io_err(&path, "rewriting", e))?;
        self.acks_len = buf.len() as u64;
        self.dirty_acks = false;
        if sync {
            fsync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Appends a journal record; an intent is made durable at once (the
    /// claim request waits for it) unless the policy is `never`.
    fn write_claim(&mut self, rec: &ClaimRecord) -> Result<(), SpoolError> {
        let path = self.dir.join(CLAIM_LOG);
        let mut buf = Vec::new();
        frame(&serde_json::to_vec(rec).expect("serializable"), &mut buf);
        self.claims
            .write_all(&buf)
            .map_err(|e| io_err(&path, "append", e))?;
        self.claims_len += buf.len() as u64;
        let sync = match self.fsync {
            FsyncPolicy::Never => false,
            FsyncPolicy::Always => true,
            FsyncPolicy::Batch => rec.kind == ClaimKind::Intent,
        };
        if sync {
            self.claims
                .sync_data()
                .map_err(|e| io_err(&path, "fsync", e))?;
        }
        if self.claims_len > CLAIM_LOG_COMPACT_BYTES {
            let bytes = claim_log_bytes(&self.journal);
            self.claims = replace_file(
                &self.dir,
                CLAIM_LOG,
                &bytes,
                self.fsync != FsyncPolicy::Never,
            )?;
            self.claims_len = bytes.len() as u64;
        }
        Ok(())
    }

    fn journal_entry(
        &mut self,
        op_id: &str,
        replica_id: &str,
        kind: ClaimKind,
    ) -> Result<(), SpoolError> {
        self.journal.insert(
            op_id.to_owned(),
            JournalEntry {
                op_id: op_id.to_owned(),
                replica_id: replica_id.to_owned(),
                answered: kind == ClaimKind::Claimed,
            },
        );
        self.write_claim(&ClaimRecord {
            op: op_id.to_owned(),
            replica: replica_id.to_owned(),
            kind,
        })
    }

    fn read_at(&mut self, loc: Loc) -> Result<Report, SpoolError> {
        let payload = self.payload_at(loc)?;
        serde_json::from_slice(&payload).map_err(|e| {
            err(
                &segment_path(&self.dir, loc.segment),
                format!("bad record at offset {}: {e}", loc.offset),
            )
        })
    }

    /// The payload of the record at `loc`, its checksum checked.
    fn payload_at(&mut self, loc: Loc) -> Result<Vec<u8>, SpoolError> {
        let path = segment_path(&self.dir, loc.segment);
        let file = match self.readers.entry(loc.segment) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(File::open(&path).map_err(|e| io_err(&path, "", e))?)
            }
        };
        let mut header = [0u8; HEADER];
        file.read_exact_at(&mut header, loc.offset)
            .map_err(|e| io_err(&path, &format!("reading offset {}", loc.offset), e))?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len > MAX_RECORD {
            return Err(err(
                &path,
                format!("corrupt record at offset {}", loc.offset),
            ));
        }
        let mut payload = vec![0u8; len];
        file.read_exact_at(&mut payload, loc.offset + HEADER as u64)
            .map_err(|e| io_err(&path, &format!("reading offset {}", loc.offset), e))?;
        if crc32fast::hash(&payload) != crc {
            return Err(err(
                &path,
                format!("checksum mismatch at offset {}", loc.offset),
            ));
        }
        Ok(payload)
    }
}

impl DiskSpool {
    /// Appends reports, each with its JSON (the record's payload).
    fn append_json(&mut self, reports: &[(&Report, &[u8])]) -> Result<(), SpoolError> {
        let path = segment_path(&self.dir, self.active_id);
        // Check the whole batch first, so that a refused batch writes nothing.
        let mut next: HashMap<&str, u64> = HashMap::new();
        for (r, _) in reports {
            let expected = next
                .entry(&r.op_id)
                .or_insert_with(|| self.ops.get(&r.op_id).map_or(0, |o| o.last_seq) + 1);
            if r.seq != *expected {
                return Err(err(
                    &path,
                    format!(
                        "operation {}: append of seq {} where {} was expected",
                        r.op_id, r.seq, expected
                    ),
                ));
            }
            *expected += 1;
        }
        let mut buf = Vec::new();
        let mut locs = Vec::with_capacity(reports.len());
        for (_, json) in reports {
            let offset = self.active_len + buf.len() as u64;
            frame(json, &mut buf);
            locs.push(offset);
        }
        self.active
            .write_all(&buf)
            .map_err(|e| io_err(&path, "append", e))?;
        self.active_len += buf.len() as u64;
        self.dirty_segment = true;
        for ((r, _), offset) in reports.iter().zip(locs) {
            self.forgotten.remove(&r.op_id);
            let op = self.ops.entry(r.op_id.clone()).or_default();
            op.last_seq = r.seq;
            op.terminal |= r.is_terminal();
            op.count(r);
            op.live.push_back(Loc {
                segment: self.active_id,
                offset,
            });
            *self.segments.entry(self.active_id).or_default() += 1;
        }
        if self.fsync == FsyncPolicy::Always {
            self.flush()?;
        }
        if self.active_len >= self.segment_bytes {
            self.rotate()?;
        }
        Ok(())
    }
}

impl Spool for DiskSpool {
    fn append(&mut self, reports: &[Report]) -> Result<(), SpoolError> {
        let json: Vec<String> = reports.iter().map(Report::to_json).collect();
        let pairs: Vec<(&Report, &[u8])> = reports
            .iter()
            .zip(&json)
            .map(|(r, j)| (r, j.as_bytes()))
            .collect();
        self.append_json(&pairs)
    }

    fn append_encoded(&mut self, report: &Report, json: &str) -> Result<(), SpoolError> {
        self.append_json(&[(report, json.as_bytes())])
    }

    fn read_encoded(
        &mut self,
        op_id: &str,
        after: u64,
        max: usize,
    ) -> Result<Vec<EncodedReport>, SpoolError> {
        let Some(op) = self.ops.get(op_id) else {
            return Ok(Vec::new());
        };
        let first = op.acked + 1;
        let skip = after.saturating_add(1).saturating_sub(first);
        let (last_seq, terminal) = (op.last_seq, op.terminal);
        let locs: Vec<Loc> = op
            .live
            .iter()
            .skip(skip as usize)
            .take(max)
            .copied()
            .collect();
        let mut out = Vec::with_capacity(locs.len());
        for (i, loc) in locs.into_iter().enumerate() {
            // The record as stored, checksum checked: no decoding and
            // encoding again on its way to the control plane.
            let payload = self.payload_at(loc)?;
            let json = String::from_utf8(payload).map_err(|_| {
                err(
                    &segment_path(&self.dir, loc.segment),
                    format!("bad record at offset {}: not UTF-8", loc.offset),
                )
            })?;
            let seq = first + skip + i as u64;
            out.push(EncodedReport {
                op_id: op_id.to_owned(),
                seq,
                terminal: terminal && seq == last_seq,
                json: json.into(),
            });
        }
        Ok(out)
    }

    fn flush(&mut self) -> Result<(), SpoolError> {
        if self.fsync == FsyncPolicy::Never {
            return Ok(());
        }
        if self.dirty_segment {
            self.active
                .sync_data()
                .map_err(|e| io_err(&segment_path(&self.dir, self.active_id), "", e))?;
            self.dirty_segment = false;
        }
        self.sync_acks()
    }

    fn read(&mut self, op_id: &str, after: u64, max: usize) -> Result<Vec<Report>, SpoolError> {
        let Some(op) = self.ops.get(op_id) else {
            return Ok(Vec::new());
        };
        let first = op.acked + 1;
        let skip = after.saturating_add(1).saturating_sub(first) as usize;
        let locs: Vec<Loc> = op.live.iter().skip(skip).take(max).copied().collect();
        locs.into_iter().map(|l| self.read_at(l)).collect()
    }

    fn ack(&mut self, op_id: &str, seq: u64) -> Result<(), SpoolError> {
        let Some(op) = self.ops.get_mut(op_id) else {
            return Ok(());
        };
        let new = seq.min(op.last_seq);
        if new <= op.acked {
            return Ok(());
        }
        for _ in op.acked..new {
            if let Some(loc) = op.live.pop_front() {
                if let Some(n) = self.segments.get_mut(&loc.segment) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        op.acked = new;
        let rec = AckRecord {
            op: op_id.to_owned(),
            acked: op.acked,
            last: op.last_seq,
            terminal: op.terminal,
            forget: false,
            through: op.counted,
            steps: op.take_dirty(),
        };
        self.write_ack(&rec)?;
        self.drop_dead_segments()
    }

    fn operations(&mut self) -> Result<Vec<SpooledOperation>, SpoolError> {
        Ok(self
            .ops
            .iter()
            .map(|(id, op)| SpooledOperation {
                op_id: id.clone(),
                last_seq: op.last_seq,
                acked: op.acked,
                terminal: op.terminal,
            })
            .collect())
    }

    fn forget(&mut self, op_id: &str) -> Result<(), SpoolError> {
        let Some(op) = self.ops.remove(op_id) else {
            return Ok(());
        };
        let mut newest = 0;
        for loc in op.live {
            newest = newest.max(loc.segment);
            if let Some(n) = self.segments.get_mut(&loc.segment) {
                *n = n.saturating_sub(1);
            }
        }
        // Records of the operation may sit in any segment up to the active one.
        self.forgotten
            .insert(op_id.to_owned(), newest.max(self.active_id));
        let rec = AckRecord {
            op: op_id.to_owned(),
            acked: 0,
            last: 0,
            terminal: false,
            forget: true,
            through: 0,
            steps: Vec::new(),
        };
        self.write_ack(&rec)?;
        self.drop_dead_segments()
    }

    fn progress(&mut self, op_id: &str) -> Result<Vec<StepProgress>, SpoolError> {
        Ok(self
            .ops
            .get(op_id)
            .map(|o| o.progress.to_vec())
            .unwrap_or_default())
    }

    fn mark(
        &mut self,
        op_id: &str,
        step: u32,
        node: &str,
        stream: Stream,
        mark: Mark,
    ) -> Result<(), SpoolError> {
        if let Some(op) = self.ops.get_mut(op_id) {
            if let Some(key) = op.progress.mark(step, node, stream, mark) {
                op.dirty.insert(key);
            }
        }
        Ok(())
    }

    fn journal_claim(&mut self, op_id: &str, replica_id: &str) -> Result<(), SpoolError> {
        self.journal_entry(op_id, replica_id, ClaimKind::Intent)
    }

    fn journal_claimed(&mut self, op_id: &str, replica_id: &str) -> Result<(), SpoolError> {
        self.journal_entry(op_id, replica_id, ClaimKind::Claimed)
    }

    fn journal_release(&mut self, op_id: &str) -> Result<(), SpoolError> {
        if self.journal.remove(op_id).is_none() {
            return Ok(());
        }
        self.write_claim(&ClaimRecord {
            op: op_id.to_owned(),
            replica: String::new(),
            kind: ClaimKind::Release,
        })
    }

    fn journal(&mut self) -> Result<Vec<JournalEntry>, SpoolError> {
        Ok(self.journal.values().cloned().collect())
    }

    fn record_replica(&mut self, replica_id: &str) -> Result<(), SpoolError> {
        replace_file(
            &self.dir,
            REPLICA_FILE,
            replica_id.as_bytes(),
            self.fsync != FsyncPolicy::Never,
        )
        .map(|_| ())
    }

    fn recorded_replica(&mut self) -> Result<Option<String>, SpoolError> {
        let path = self.dir.join(REPLICA_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let id = text.trim();
                Ok((!id.is_empty()).then(|| id.to_owned()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, "", e)),
        }
    }
}

/// `claims.log` holding just `journal`.
fn claim_log_bytes(journal: &BTreeMap<String, JournalEntry>) -> Vec<u8> {
    let mut buf = Vec::new();
    for e in journal.values() {
        let rec = ClaimRecord {
            op: e.op_id.clone(),
            replica: e.replica_id.clone(),
            kind: if e.answered {
                ClaimKind::Claimed
            } else {
                ClaimKind::Intent
            },
        };
        frame(&serde_json::to_vec(&rec).expect("serializable"), &mut buf);
    }
    buf
}

/// Total size of the files in `dir` (for tests and `rdrunner config`).
pub fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdrunner_actors::model::{LogReport, OpReport, ReportBody, State, Stream};

    fn log(op: &str, seq: u64) -> Report {
        Report {
            op_id: op.into(),
            seq,
            ts: "2026-01-01T00:00:00.000Z".into(),
            body: ReportBody::Log(LogReport {
                node: "n1".into(),
                step: 1,
                stream: Stream::Stdout,
                text: format!("{op} line {seq}"),
            }),
        }
    }

    fn terminal(op: &str, seq: u64) -> Report {
        Report {
            body: ReportBody::Op(OpReport {
                state: State::Succeeded,
                message: None,
            }),
            ..log(op, seq)
        }
    }

    fn seqs(r: &[Report]) -> Vec<u64> {
        r.iter().map(|r| r.seq).collect()
    }

    fn open(dir: &Path) -> DiskSpool {
        DiskSpool::open(dir, FsyncPolicy::Batch, 4096).unwrap()
    }

    /// What goes to the control plane is the JSON stored at append, as it
    /// was encoded then: before and after a reopen, past an ack.
    #[test]
    fn encoded_reads_hand_over_the_stored_json() {
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path());
        let mut reports: Vec<Report> = (1..=30).map(|q| log("a", q)).collect();
        reports.push(terminal("a", 31));
        for r in &reports {
            s.append_encoded(r, &r.to_json()).unwrap();
        }
        s.append(&[log("b", 1)]).unwrap();
        let want = |from: usize| -> Vec<EncodedReport> {
            reports[from..].iter().map(EncodedReport::of).collect()
        };
        assert_eq!(s.read_encoded("a", 0, 100).unwrap(), want(0));
        s.ack("a", 10).unwrap();
        s.flush().unwrap();
        drop(s);
        let mut s = open(d.path());
        let got = s.read_encoded("a", 10, 100).unwrap();
        assert_eq!(got, want(10));
        assert!(got.last().unwrap().terminal);
        assert!(got[..got.len() - 1].iter().all(|r| !r.terminal));
        assert_eq!(s.read_encoded("a", 20, 3).unwrap(), want(20)[..3].to_vec());
        assert_eq!(
            s.read_encoded("b", 0, 10).unwrap(),
            vec![EncodedReport::of(&log("b", 1))]
        );
        assert!(s.read_encoded("c", 0, 10).unwrap().is_empty());
    }

    #[test]
    fn reopen_after_append_keeps_everything_unacked() {
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path());
        s.append(&[log("a", 1), log("a", 2), log("b", 1)]).unwrap();
        s.append(&[terminal("a", 3)]).unwrap();
        s.flush().unwrap();
        assert_eq!(seqs(&s.read("a", 1, 10).unwrap()), vec![2, 3]);
        drop(s);
        let mut s = open(d.path());
        assert_eq!(
            s.read("a", 0, 10).unwrap(),
            vec![log("a", 1), log("a", 2), terminal("a", 3)]
        );
        assert_eq!(s.read("b", 0, 10).unwrap(), vec![log("b", 1)]);
        let ops = s.operations().unwrap();
        assert_eq!(
            ops.iter()
                .map(|o| (o.op_id.as_str(), o.last_seq, o.acked, o.terminal))
                .collect::<Vec<_>>(),
            vec![("a", 3, 0, true), ("b", 1, 0, false)]
        );
        // Appends go on from where they were; gaps are refused.
        assert!(s.append(&[log("b", 3)]).is_err());
        s.append(&[log("b", 2)]).unwrap();
    }

    /// A report of step `step` on `node`: a stdout or stderr line, or the
    /// node's state.
    fn step_report(op: &str, seq: u64, step: u32, node: &str, what: &str) -> Report {
        let body = match what {
            "out" | "err" | "sys" => ReportBody::Log(LogReport {
                node: node.into(),
                step,
                stream: match what {
                    "out" => Stream::Stdout,
                    "err" => Stream::Stderr,
                    _ => Stream::System,
                },
                text: format!("{what} {seq}"),
            }),
            state => ReportBody::Node(rdrunner_actors::model::NodeReport {
                node: node.into(),
                step,
                state: if state == "running" {
                    State::Running
                } else {
                    State::Succeeded
                },
                exit_code: (state != "running").then_some(0),
                message: None,
            }),
        };
        Report {
            op_id: op.into(),
            seq,
            ts: ts_of(seq),
            body,
        }
    }

    /// A report time per seq.
    fn ts_of(seq: u64) -> String {
        format!("2026-01-01T00:{:02}:{:02}.000Z", seq / 60 % 60, seq % 60)
    }

    /// When each step started, as the spool has it.
    fn started_of(s: &mut DiskSpool, op: &str) -> Vec<Option<String>> {
        s.progress(op)
            .unwrap()
            .into_iter()
            .map(|p| p.started)
            .collect()
    }

    fn progress_of(s: &mut DiskSpool, op: &str) -> Vec<(u32, String, u64, u64, Option<State>)> {
        s.progress(op)
            .unwrap()
            .into_iter()
            .map(|p| {
                (
                    p.step,
                    p.node,
                    p.stdout_lines,
                    p.stderr_lines,
                    p.state.map(|n| n.state),
                )
            })
            .collect()
    }

    #[test]
    fn step_progress_survives_acks_dropped_segments_compaction_and_torn_tails() {
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path());
        let mut seq = 0;
        let mut next = |step: u32, node: &str, what: &str| {
            seq += 1;
            step_report("a", seq, step, node, what)
        };
        // Step 1 ran and ended on n1; step 2 is running on n1 and n2.
        let mut reports = vec![next(1, "n1", "running")];
        for _ in 0..40 {
            reports.push(next(1, "n1", "out"));
        }
        reports.push(next(1, "n1", "err"));
        reports.push(next(1, "n1", "sys"));
        reports.push(next(1, "n1", "succeeded"));
        reports.push(next(2, "n1", "running"));
        reports.push(next(2, "n2", "running"));
        for _ in 0..30 {
            reports.push(next(2, "n2", "out"));
            reports.push(next(2, "n1", "err"));
        }
        for r in &reports {
            // One at a time, in small segments: many rotations.
            s.append(std::slice::from_ref(r)).unwrap();
        }
        let want = vec![
            (1, "n1".to_owned(), 40, 1, Some(State::Succeeded)),
            (2, "n1".to_owned(), 0, 30, Some(State::Running)),
            (2, "n2".to_owned(), 30, 0, Some(State::Running)),
        ];
        assert_eq!(progress_of(&mut s, "a"), want);
        // Each step started at the time of its running report.
        let started = vec![Some(ts_of(1)), Some(ts_of(45)), Some(ts_of(46))];
        assert_eq!(started_of(&mut s, "a"), started);
        // Most of it acked: the segments holding it are deleted, and the
        // progress they held lives on in acks.log.
        let last = reports.len() as u64;
        s.ack("a", last - 5).unwrap();
        s.flush().unwrap();
        assert!(s.segment_count() < 4, "{}", s.segment_count());
        drop(s);
        let mut s = open(d.path());
        assert_eq!(progress_of(&mut s, "a"), want);
        // More lines after the reopen (which compacted acks.log), then a
        // torn record at the end: the torn line is not counted.
        s.append(&[step_report("a", last + 1, 2, "n2", "out")])
            .unwrap();
        let seg = segment_path(d.path(), s.active_id);
        drop(s);
        let mut extra = Vec::new();
        frame(
            &serde_json::to_vec(&step_report("a", last + 2, 2, "n2", "out")).unwrap(),
            &mut extra,
        );
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&extra[..extra.len() - 3]).unwrap();
        drop(f);
        let mut s = open(d.path());
        let mut want = want;
        want[2].2 += 1;
        assert_eq!(progress_of(&mut s, "a"), want);
        // Acked through the end, reopened twice: still all there.
        s.ack("a", last + 1).unwrap();
        drop(s);
        let s = open(d.path());
        drop(s);
        let mut s = open(d.path());
        assert_eq!(progress_of(&mut s, "a"), want);
        assert_eq!(started_of(&mut s, "a"), started);
        // Forgotten: nothing left.
        s.forget("a").unwrap();
        assert!(s.progress("a").unwrap().is_empty());
        drop(s);
        let mut s = open(d.path());
        assert!(s.progress("a").unwrap().is_empty());
    }

    #[test]
    fn marks_of_a_steps_output_survive_acks_and_reopen_and_only_move_forward() {
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path());
        s.append(&[
            step_report("a", 1, 1, "n1", "running"),
            step_report("a", 2, 1, "n1", "out"),
            step_report("a", 3, 1, "n1", "err"),
        ])
        .unwrap();
        let mark = |offset, lines| Mark { offset, lines };
        s.mark("a", 1, "n1", Stream::Stdout, mark(70_000, 1))
            .unwrap();
        s.mark("a", 1, "n1", Stream::Stderr, mark(90_000, 1))
            .unwrap();
        // An older mark does not replace a newer one; an unknown step is
        // ignored.
        s.mark("a", 1, "n1", Stream::Stdout, mark(10, 0)).unwrap();
        s.mark("a", 9, "n9", Stream::Stdout, mark(10, 0)).unwrap();
        s.ack("a", 3).unwrap();
        drop(s);
        let mut s = open(d.path());
        let p = s.progress("a").unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].stdout_mark, Some(mark(70_000, 1)));
        assert_eq!(p[0].stderr_mark, Some(mark(90_000, 1)));
        // Written again whole when acks.log is compacted at open.
        drop(s);
        let mut s = open(d.path());
        assert_eq!(
            s.progress("a").unwrap()[0].stdout_mark,
            Some(mark(70_000, 1))
        );
    }

    #[test]
    fn torn_tail_is_cut_on_open() {
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path());
        s.append(&[log("a", 1), log("a", 2)]).unwrap();
        let seg = segment_path(d.path(), s.active_id);
        drop(s);
        // Half a record at the end, as a crash mid-write leaves it.
        let mut extra = Vec::new();
        frame(&serde_json::to_vec(&log("a", 3)).unwrap(), &mut extra);
        let before = std::fs::metadata(&seg).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&extra[..extra.len() / 2]).unwrap();
        drop(f);
        let mut s = open(d.path());
        assert_eq!(s.cut_on_open(), (extra.len() / 2) as u64);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), before);
        assert_eq!(seqs(&s.read("a", 0, 10).unwrap()), vec![1, 2]);
        s.append(&[log("a", 3)]).unwrap();
        // A flipped byte in the payload fails the checksum: cut there too.
        drop(s);
        let mut bytes = std::fs::read(&seg).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        let mut s = open(d.path());
        assert_eq!(seqs(&s.read("a", 0, 10).unwrap()), vec![1]);
    }

    #[test]
    fn ack_drops_whole_segments_and_survives_reopen() {
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path());
        // Small segments: many rotations.
        for seq in 1..=200 {
            s.append(&[log("a", seq)]).unwrap();
        }
        s.append(&[log("b", 1)]).unwrap();
        let many = s.segment_count();
        assert!(many > 3, "{many}");
        s.ack("a", 150).unwrap();
        let fewer = s.segment_count();
        assert!(fewer < many, "{fewer} < {many}");
        assert_eq!(
            seqs(&s.read("a", 0, 100).unwrap()),
            (151..=200).collect::<Vec<_>>()
        );
        drop(s);
        let mut s = open(d.path());
        let a = s
            .operations()
            .unwrap()
            .into_iter()
            .find(|o| o.op_id == "a")
            .unwrap();
        assert_eq!((a.acked, a.last_seq), (150, 200));
        assert_eq!(
            seqs(&s.read("a", 150, 100).unwrap()),
            (151..=200).collect::<Vec<_>>()
        );
        s.append(&[terminal("a", 201)]).unwrap();
        s.ack("a", 201).unwrap();
        s.forget("a").unwrap();
        s.ack("b", 1).unwrap();
        s.forget("b").unwrap();
        drop(s);
        let mut s = open(d.path());
        assert!(s.operations().unwrap().is_empty());
        // Everything acked: only the fresh active segment and the ack log remain.
        assert_eq!(s.segment_count(), 1);
        assert!(dir_size(d.path()) < 1024, "{}", dir_size(d.path()));
    }

    #[test]
    fn terminal_state_survives_even_when_its_segment_is_gone() {
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path());
        s.append(&[log("a", 1), terminal("a", 2)]).unwrap();
        s.ack("a", 2).unwrap();
        drop(s);
        // Reopen twice so that the segment holding the reports is deleted.
        drop(open(d.path()));
        let mut s = open(d.path());
        let ops = s.operations().unwrap();
        assert_eq!(ops.len(), 1);
        assert_eq!(
            (ops[0].acked, ops[0].last_seq, ops[0].terminal),
            (2, 2, true)
        );
        assert!(s.read("a", 0, 10).unwrap().is_empty());
    }

    #[test]
    fn many_operations_interleaved() {
        let d = tempfile::tempdir().unwrap();
        let mut s = DiskSpool::open(d.path(), FsyncPolicy::Never, 8192).unwrap();
        let mut model = rdrunner_actors::MemorySpool::new();
        let mut rng_state = 7u64;
        let mut next = || {
            rng_state = rng_state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            rng_state >> 33
        };
        let mut last = [0u64; 8];
        let mut acked = [0u64; 8];
        for round in 0..3000 {
            if round % 500 == 499 {
                // Reopen: the index is rebuilt from the files (the old
                // spool is closed first: it holds the directory's lock).
                drop(s);
                s = DiskSpool::open(d.path(), FsyncPolicy::Never, 8192).unwrap();
            }
            let i = (next() % 8) as usize;
            let op = format!("op-{i}");
            match next() % 10 {
                0..=5 => {
                    let n = 1 + next() % 4;
                    let batch: Vec<Report> = (1..=n).map(|k| log(&op, last[i] + k)).collect();
                    last[i] += n;
                    s.append(&batch).unwrap();
                    model.append(&batch).unwrap();
                }
                6 | 7 if last[i] > acked[i] => {
                    let to = acked[i] + 1 + next() % (last[i] - acked[i]);
                    acked[i] = to;
                    s.ack(&op, to).unwrap();
                    model.ack(&op, to).unwrap();
                }
                _ => s.flush().unwrap(),
            }
            let after = acked[i] + next() % 3;
            assert_eq!(
                s.read(&op, after, 5).unwrap(),
                model.read(&op, after, 5).unwrap(),
                "round {round}"
            );
        }
        assert_eq!(s.operations().unwrap(), model.operations().unwrap());
        assert_eq!(s.unacked(), model.len());
    }

    #[test]
    fn truncation_at_every_byte_offset_keeps_a_valid_prefix() {
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path());
        let reports: Vec<Report> = (1..=2).map(|q| log("a", q)).collect();
        s.append(&reports).unwrap();
        s.append(&[terminal("a", 3)]).unwrap();
        let seg = segment_path(d.path(), s.active_id);
        drop(s);
        let full = std::fs::read(&seg).unwrap();
        let (records, _) = unframe(&full);
        let ends: Vec<usize> = records
            .iter()
            .map(|(off, p)| *off as usize + HEADER + p.len())
            .collect();
        for cut in 0..=full.len() {
            let case = tempfile::tempdir().unwrap();
            std::fs::write(segment_path(case.path(), 1), &full[..cut]).unwrap();
            let mut s = DiskSpool::open(case.path(), FsyncPolicy::Never, 4096).unwrap();
            let whole = ends.iter().filter(|e| **e <= cut).count() as u64;
            let got = s.read("a", 0, 100).unwrap();
            assert_eq!(seqs(&got), (1..=whole).collect::<Vec<_>>(), "cut at {cut}");
            let kept = ends
                .iter()
                .copied()
                .filter(|e| *e <= cut)
                .max()
                .unwrap_or(0);
            assert_eq!(s.cut_on_open(), (cut - kept) as u64, "cut at {cut}");
            // The spool goes on appending after the cut.
            s.append(&[log("a", whole + 1)]).unwrap();
        }
    }

    #[test]
    fn fsync_always_and_read_of_unknown_operation() {
        let d = tempfile::tempdir().unwrap();
        let mut s = DiskSpool::open(d.path(), FsyncPolicy::Always, 4096).unwrap();
        s.append(&[log("a", 1)]).unwrap();
        assert!(!s.dirty_segment, "always: fsynced at append");
        assert!(s.read("zzz", 0, 10).unwrap().is_empty());
        s.ack("zzz", 5).unwrap();
        drop(s);
        let mut s = DiskSpool::open(d.path(), FsyncPolicy::Batch, 4096).unwrap();
        s.append(&[log("a", 2)]).unwrap();
        assert!(s.dirty_segment, "batch: not fsynced until flush");
        s.flush().unwrap();
        assert!(!s.dirty_segment);
    }

    fn entry(op: &str, replica: &str, answered: bool) -> JournalEntry {
        JournalEntry {
            op_id: op.into(),
            replica_id: replica.into(),
            answered,
        }
    }

    #[test]
    fn the_claim_journal_survives_reopen_and_drops_released_claims() {
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path());
        s.journal_claim("a", "r1").unwrap();
        s.journal_claim("b", "r1").unwrap();
        s.journal_claim("c", "r1").unwrap();
        s.journal_claimed("a", "r1").unwrap();
        // A 409 answer releases b; c's terminal report is acked.
        s.journal_release("b").unwrap();
        s.append(&[terminal("c", 1)]).unwrap();
        s.ack("c", 1).unwrap();
        s.forget("c").unwrap();
        s.journal_release("c").unwrap();
        drop(s);
        let mut s = open(d.path());
        assert_eq!(s.journal().unwrap(), vec![entry("a", "r1", true)]);
        s.journal_release("a").unwrap();
        drop(s);
        assert!(open(d.path()).journal().unwrap().is_empty());
    }

    #[test]
    fn a_torn_claim_record_is_cut_and_the_rest_kept() {
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path());
        s.journal_claim("a", "r1").unwrap();
        drop(s);
        let path = d.path().join(CLAIM_LOG);
        let mut extra = Vec::new();
        let rec = ClaimRecord {
            op: "b".into(),
            replica: "r1".into(),
            kind: ClaimKind::Intent,
        };
        frame(&serde_json::to_vec(&rec).unwrap(), &mut extra);
        for cut in 1..extra.len() {
            let whole = std::fs::read(&path).unwrap();
            let mut f = OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(&extra[..cut]).unwrap();
            drop(f);
            let mut s = open(d.path());
            assert_eq!(
                s.journal().unwrap(),
                vec![entry("a", "r1", false)],
                "cut {cut}"
            );
            drop(s);
            assert_eq!(std::fs::read(&path).unwrap(), whole, "cut {cut}");
        }
        // The whole record is kept.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&extra).unwrap();
        drop(f);
        assert_eq!(
            open(d.path()).journal().unwrap(),
            vec![entry("a", "r1", false), entry("b", "r1", false)]
        );
    }

    #[test]
    fn the_step_key_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let s = open(d.path());
        let key = s.step_key().unwrap();
        assert_eq!(s.step_key().unwrap(), key);
        drop(s);
        let path = d.path().join(STEP_KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(open(d.path()).step_key().unwrap(), key);
        // Another spool, another key.
        let other = tempfile::tempdir().unwrap();
        assert_ne!(open(other.path()).step_key().unwrap(), key);
        // A damaged key is refused with what to do, not replaced silently.
        std::fs::write(&path, "xyz").unwrap();
        let e = open(d.path()).step_key().unwrap_err().to_string();
        assert!(e.contains("remove it to make a new key"), "{e}");
    }

    #[test]
    fn the_replica_id_is_kept_in_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let mut s = open(d.path());
        assert_eq!(s.recorded_replica().unwrap(), None);
        s.record_replica("rep-1").unwrap();
        s.record_replica("rep-2").unwrap();
        drop(s);
        let mode = std::fs::metadata(d.path().join(REPLICA_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            open(d.path()).recorded_replica().unwrap().as_deref(),
            Some("rep-2")
        );
    }

    fn modes(dir: &Path) -> Vec<(String, u32)> {
        use std::os::unix::fs::PermissionsExt;
        let mut out: Vec<(String, u32)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let mode = e.metadata().unwrap().permissions().mode() & 0o777;
                (e.file_name().to_string_lossy().into_owned(), mode)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_spool_is_private_whatever_the_umask_and_the_modes_it_had() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("runner/spool");
        let mut s = open(&dir);
        s.append(&(1..=200).map(|i| log("a", i)).collect::<Vec<_>>())
            .unwrap();
        s.flush().unwrap();
        s.ack("a", 150).unwrap();
        drop(s);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d.path().join("runner")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        let files = modes(&dir);
        assert!(files.len() >= 3, "{files:?}");
        assert!(files.iter().all(|(_, m)| *m == 0o600), "{files:?}");

        // A spool made loose (by hand, or by an older version) is tightened
        // when it is opened.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (name, _) in &files {
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        let s = open(&dir);
        assert_eq!(s.unacked(), 50);
        assert_eq!(mode(&dir), 0o700);
        let files = modes(&dir);
        assert!(files.iter().all(|(_, m)| *m == 0o600), "{files:?}");
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn a_spool_directory_is_used_by_one_process_at_a_time() {
        let d = tempfile::tempdir().unwrap();
        let first = DiskSpool::open(d.path(), FsyncPolicy::Never, 1 << 20).unwrap();
        let e = DiskSpool::open(d.path(), FsyncPolicy::Never, 1 << 20).unwrap_err();
        assert!(
            e.to_string().contains("in use by another rdrunner process"),
            "{e}"
        );
        assert!(e.to_string().contains("spool.dir"), "{e}");
        drop(first);
        DiskSpool::open(d.path(), FsyncPolicy::Never, 1 << 20).unwrap();
    }
}
