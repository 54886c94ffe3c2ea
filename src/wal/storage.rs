//! Storage: the only door to the disk.
//!
//! The log and the snapshots see files through [`Storage`] and
//! [`StorageFile`], so the same code runs on the real file system
//! ([`FileStorage`]), on io_uring ([`UringStorage`], Linux), and on the
//! in-memory, fault-injecting [`MemStorage`] that crash tests use. Names are
//! flat file names inside one directory.
//!
//! A file is opened on the thread that uses it (io_uring's files are bound
//! to their thread's ring), so `StorageFile` is not `Send`; `Storage` is, so
//! a shard thread can be handed one.
//!
//! Durability model: bytes written are durable once `sync_data` returns Ok.
//! Creating, renaming and removing a file is durable once `sync_dir` returns
//! Ok.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

/// A directory of files.
pub trait Storage: Send + Sync {
    /// Opens a file for reading and writing, creating it empty if `create`
    /// and it does not exist.
    fn open(&self, name: &str, create: bool) -> io::Result<Box<dyn StorageFile>>;
    /// Every file name in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Removes a file.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Renames a file, replacing `to`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes creations, renames and removals durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// A human-readable place for a file, for errors.
    fn describe(&self, name: &str) -> String;
    /// Bytes the directory's file system still lets this process write
    /// (unknown: as many as asked).
    fn free_bytes(&self) -> io::Result<u64> {
        Ok(u64::MAX)
    }
}

/// Free bytes for an unprivileged writer on the file system holding `dir`.
fn statvfs_free(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `st` a valid out
    // pointer for the duration of the call.
    if unsafe { libc::statvfs(path.as_ptr(), &raw mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// One open file.
#[allow(clippy::len_without_is_empty)] // a file's length is an I/O result, not a collection's
pub trait StorageFile {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every byte written so far durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// A failpoint for torture runs: `HARBOUR_FAILPOINT_SYNC_DELAY_US` makes
/// every `sync_data` of the real backends sleep that long first, a slow
/// disk on demand. Read once per process; unset (the default) costs one
/// load per sync.
#[must_use]
pub fn failpoint_sync_delay() -> Option<std::time::Duration> {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        let us: u64 = std::env::var("HARBOUR_FAILPOINT_SYNC_DELAY_US").ok()?.parse().ok()?;
        (us > 0).then(|| std::time::Duration::from_micros(us))
    })
}

fn slow_disk() {
    if let Some(delay) = failpoint_sync_delay() {
        std::thread::sleep(delay);
    }
}

/// Reads a whole file.
pub fn read_all(storage: &dyn Storage, name: &str) -> io::Result<Vec<u8>> {
    let file = storage.open(name, false)?;
    let len = usize::try_from(file.len()?).map_err(|_| io::Error::other("file too large"))?;
    let mut buf = vec![0; len];
    file.read_at(&mut buf, 0)?;
    Ok(buf)
}

// ---- std::fs ---------------------------------------------------------------

/// Files in a directory of the real file system, through `std::fs`.
#[derive(Clone, Debug)]
pub struct FileStorage {
    dir: PathBuf,
}

impl FileStorage {
    /// Uses `dir`, creating it if needed; a new directory's entry is made
    /// durable in its parent.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            fs::create_dir_all(dir)?;
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            File::open(parent)?.sync_all()?;
        }
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// Writes a small file whole and durably: a temporary file, fsync,
    /// rename, directory fsync.
    pub fn write_durably(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.path(&format!("{name}.tmp"));
        fs::write(&tmp, bytes)?;
        File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, self.path(name))?;
        self.sync_dir()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn open_std(&self, name: &str, create: bool) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).create(create).truncate(false).open(self.path(name))
    }
}

struct StdFile(File);

impl StorageFile for StdFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.0, buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, buf, offset)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        slow_disk();
        self.0.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl Storage for FileStorage {
    fn open(&self, name: &str, create: bool) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(StdFile(self.open_std(name, create)?)))
    }
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path(name))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path(from), self.path(to))
    }
    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
    fn describe(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
    fn free_bytes(&self) -> io::Result<u64> {
        statvfs_free(&self.dir)
    }
}

// ---- io_uring ----------------------------------------------------------------

/// Files of a real directory whose writes and syncs go through io_uring
/// (tokio-uring), one ring per thread. Directory operations use `std::fs`.
#[cfg(target_os = "linux")]
#[derive(Clone, Debug)]
pub struct UringStorage {
    inner: FileStorage,
}

#[cfg(target_os = "linux")]
impl UringStorage {
    /// Uses `dir`, creating it if needed.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Self { inner: FileStorage::new(dir)? })
    }

    /// Whether this kernel gives us a ring (else use [`FileStorage`]).
    #[must_use]
    pub fn available() -> bool {
        with_ring(|_| ()).is_ok()
    }
}

#[cfg(target_os = "linux")]
thread_local! {
    static RING: std::cell::OnceCell<Option<tokio_uring::Runtime>> = const { std::cell::OnceCell::new() };
}

#[cfg(target_os = "linux")]
fn with_ring<T>(f: impl FnOnce(&tokio_uring::Runtime) -> T) -> io::Result<T> {
    RING.with(|cell| {
        let ring = cell.get_or_init(|| tokio_uring::Runtime::new(&tokio_uring::builder()).ok());
        ring.as_ref().map(f).ok_or_else(|| io::Error::other("io_uring is not available"))
    })
}

#[cfg(target_os = "linux")]
struct UringFile {
    file: std::rc::Rc<tokio_uring::fs::File>,
    std: File,
}

#[cfg(target_os = "linux")]
impl StorageFile for UringFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.std.metadata()?.len())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.std, buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let file = self.file.clone();
        let owned = buf.to_vec();
        with_ring(|rt| rt.block_on(async move { file.write_all_at(owned, offset).await.0 }))?
    }
    fn sync_data(&mut self) -> io::Result<()> {
        slow_disk();
        let file = self.file.clone();
        with_ring(|rt| rt.block_on(async move { file.sync_data().await }))?
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.std.set_len(len)
    }
}

#[cfg(target_os = "linux")]
impl Storage for UringStorage {
    fn open(&self, name: &str, create: bool) -> io::Result<Box<dyn StorageFile>> {
        let std = self.inner.open_std(name, create)?;
        let dup = std.try_clone()?;
        let file = with_ring(|rt| rt.block_on(async move { tokio_uring::fs::File::from_std(dup) }))?;
        Ok(Box::new(UringFile { file: std::rc::Rc::new(file), std }))
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.inner.sync_dir()
    }
    fn describe(&self, name: &str) -> String {
        self.inner.describe(name)
    }
    fn free_bytes(&self) -> io::Result<u64> {
        self.inner.free_bytes()
    }
}

// ---- in memory, with faults ---------------------------------------------------

/// Where a [`MemStorage`] fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// The storage "loses power" at this operation (counting from 1): that
    /// operation and every later one fails. A write that crashes lands a
    /// prefix of its bytes (a torn write).
    pub crash_at_op: Option<u64>,
    /// The n-th sync (`sync_data` or `sync_dir`, counting from 1) fails
    /// with EIO; the machine stays up.
    pub fail_sync_number: Option<u64>,
}

#[derive(Debug, Default)]
struct MemFile {
    data: Vec<u8>,
    /// Bytes known durable: `data[..durable_len]` survives a crash.
    durable_len: usize,
}

#[derive(Debug, Default)]
struct MemFs {
    files: BTreeMap<String, MemFile>,
    ops: u64,
    syncs: u64,
    plan: FaultPlan,
    crashed: bool,
    /// Drives how much of a torn write lands.
    seed: u64,
    /// What `free_bytes` says (tests of a full disk set it; unset: no
    /// limit).
    free: Option<u64>,
}

impl MemFs {
    /// Counts an operation; `Err` if it fails.
    fn tick(&mut self, is_sync: bool) -> Result<(), Fault> {
        if self.crashed {
            return Err(Fault::Crashed);
        }
        self.ops += 1;
        if self.plan.crash_at_op == Some(self.ops) {
            self.crashed = true;
            return Err(Fault::CrashNow);
        }
        if is_sync {
            self.syncs += 1;
            if self.plan.fail_sync_number == Some(self.syncs) {
                return Err(Fault::SyncFailed);
            }
        }
        Ok(())
    }

    fn next_random(&mut self) -> u64 {
        self.seed = crate::hash::mix64(self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15));
        self.seed
    }
}

enum Fault {
    Crashed,
    CrashNow,
    SyncFailed,
}

fn fault_error(f: &Fault) -> io::Error {
    match f {
        Fault::Crashed | Fault::CrashNow => io::Error::other("simulated power loss"),
        Fault::SyncFailed => io::Error::other("simulated EIO on fdatasync"),
    }
}

/// An in-memory directory that models what survives a crash and can fail
/// on cue. Clones share the same files.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    fs: Arc<Mutex<MemFs>>,
}

impl MemStorage {
    /// An empty directory that never fails.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty directory that fails as `plan` says; `seed` decides how
    /// much of a torn write lands.
    #[must_use]
    pub fn with_faults(plan: FaultPlan, seed: u64) -> Self {
        let fs = MemFs { plan, seed, ..MemFs::default() };
        Self { fs: Arc::new(Mutex::new(fs)) }
    }

    /// Operations counted so far (to pick crash points).
    #[must_use]
    pub fn ops(&self) -> u64 {
        self.fs.lock().ops
    }

    /// Plans a power loss at the `ops`-th operation from now (counting
    /// from 1), as [`FaultPlan::crash_at_op`] does.
    pub fn crash_in(&self, ops: u64) {
        let mut fs = self.fs.lock();
        fs.plan.crash_at_op = Some(fs.ops + ops.max(1));
    }

    /// Sets what `free_bytes` says from now on.
    pub fn set_free_bytes(&self, free: u64) {
        self.fs.lock().free = Some(free);
    }

    /// Whether the simulated power loss has happened.
    #[must_use]
    pub fn crashed(&self) -> bool {
        self.fs.lock().crashed
    }

    /// What the disk holds after the power comes back: each file keeps its
    /// durable bytes plus a seeded part of what was written after the last
    /// sync: a prefix of it reached the file's length, and within that
    /// prefix each 512-byte sector of the file independently did or did not
    /// reach the disk (a sector that did not reads as zeros, or keeps the
    /// durable bytes it held). So torn tails have holes
    /// in the middle too, as a real disk's unordered writeback leaves them.
    /// The result never fails.
    #[must_use]
    pub fn after_crash(&self, seed: u64) -> MemStorage {
        const SECTOR: usize = 512;
        let mut fs = self.fs.lock();
        fs.seed ^= seed;
        let mut files = BTreeMap::new();
        let names: Vec<String> = fs.files.keys().cloned().collect();
        for name in names {
            let r = fs.next_random();
            let (durable, unsynced) = {
                let f = &fs.files[&name];
                (f.durable_len, f.data.len() - f.durable_len)
            };
            let keep = durable + if unsynced == 0 { 0 } else { (r % (unsynced as u64 + 1)) as usize };
            let mut data = fs.files[&name].data[..keep].to_vec();
            let mut at = durable;
            while at < keep {
                // Sectors are the file's, aligned: the one holding the end of
                // the durable bytes lands whole or keeps its old zeros.
                let end = (at - at % SECTOR + SECTOR).min(keep);
                if fs.next_random().is_multiple_of(4) {
                    data[at..end].fill(0);
                }
                at = end;
            }
            files.insert(name, MemFile { durable_len: data.len(), data });
        }
        MemStorage { fs: Arc::new(Mutex::new(MemFs { files, ..MemFs::default() })) }
    }

    /// Flips one byte of a file (to test corruption detection).
    pub fn corrupt(&self, name: &str, offset: usize) {
        let mut fs = self.fs.lock();
        let f = fs.files.get_mut(name).expect("file to corrupt exists");
        f.data[offset] ^= 0x40;
    }

    /// A file's current bytes.
    #[must_use]
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        self.fs.lock().files.get(name).map(|f| f.data.clone())
    }
}

struct MemHandle {
    fs: Arc<Mutex<MemFs>>,
    name: String,
}

impl StorageFile for MemHandle {
    fn len(&self) -> io::Result<u64> {
        let fs = self.fs.lock();
        fs.files.get(&self.name).map(|f| f.data.len() as u64).ok_or_else(|| io::ErrorKind::NotFound.into())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let fs = self.fs.lock();
        let f = fs.files.get(&self.name).ok_or(io::ErrorKind::NotFound)?;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = f.data.get(start..start + buf.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut fs = self.fs.lock();
        // A set free space is a full disk for a write that would grow the
        // file past it (ENOSPC, nothing written).
        if let Some(free) = fs.free {
            let len = fs.files.get(&self.name).map_or(0, |f| f.data.len());
            let grows = (offset as usize + buf.len()).saturating_sub(len) as u64;
            if grows > free {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        let outcome = fs.tick(false);
        let landed = match &outcome {
            Ok(()) => buf.len(),
            Err(Fault::CrashNow) => (fs.next_random() % (buf.len() as u64 + 1)) as usize,
            Err(f) => return Err(fault_error(f)),
        };
        let f = fs.files.get_mut(&self.name).ok_or(io::ErrorKind::NotFound)?;
        let start = offset as usize;
        if f.data.len() < start + landed {
            f.data.resize(start + landed, 0);
        }
        f.data[start..start + landed].copy_from_slice(&buf[..landed]);
        outcome.map_err(|f| fault_error(&f))
    }
    fn sync_data(&mut self) -> io::Result<()> {
        let mut fs = self.fs.lock();
        fs.tick(true).map_err(|f| fault_error(&f))?;
        let f = fs.files.get_mut(&self.name).ok_or(io::ErrorKind::NotFound)?;
        f.durable_len = f.data.len();
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut fs = self.fs.lock();
        fs.tick(false).map_err(|f| fault_error(&f))?;
        let f = fs.files.get_mut(&self.name).ok_or(io::ErrorKind::NotFound)?;
        f.data.truncate(len as usize);
        f.durable_len = f.durable_len.min(f.data.len());
        Ok(())
    }
}

impl Storage for MemStorage {
    fn open(&self, name: &str, create: bool) -> io::Result<Box<dyn StorageFile>> {
        let mut fs = self.fs.lock();
        if !fs.files.contains_key(name) {
            if !create {
                return Err(io::ErrorKind::NotFound.into());
            }
            fs.tick(false).map_err(|f| fault_error(&f))?;
            fs.files.insert(name.to_string(), MemFile::default());
        }
        Ok(Box::new(MemHandle { fs: self.fs.clone(), name: name.to_string() }))
    }
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.fs.lock().files.keys().cloned().collect())
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        let mut fs = self.fs.lock();
        fs.tick(false).map_err(|f| fault_error(&f))?;
        fs.files.remove(name).map(|_| ()).ok_or_else(|| io::ErrorKind::NotFound.into())
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut fs = self.fs.lock();
        fs.tick(false).map_err(|f| fault_error(&f))?;
        let f = fs.files.remove(from).ok_or(io::ErrorKind::NotFound)?;
        fs.files.insert(to.to_string(), f);
        Ok(())
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.fs.lock().tick(true).map_err(|f| fault_error(&f))
    }
    fn describe(&self, name: &str) -> String {
        format!("mem:{name}")
    }
    fn free_bytes(&self) -> io::Result<u64> {
        Ok(self.fs.lock().free.unwrap_or(u64::MAX))
    }
}
