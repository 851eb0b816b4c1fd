//! Files written on a thread of their own. The merge fills a buffer per
//! output and hands each full one over, so the copy into the page cache
//! (on a busy machine the costliest part of a `write`) runs beside the
//! merge instead of inside it. An output that will be kept has its pages
//! sent to disk as they are written (`sync_file_range`), so the `fsync`
//! that makes it durable finds little left to do.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

/// Bytes gathered before a buffer goes to the writing thread.
const CHUNK: usize = 1 << 20;

/// Buffers queued at most (each [`CHUNK`] bytes); a full queue makes the
/// merge wait for the disk.
const QUEUE: usize = 16;

/// A file the writing thread appends to.
struct Target {
    file: File,
    path: PathBuf,
    /// The first error the writing thread met on this file.
    error: Mutex<Option<io::Error>>,
}

impl Target {
    fn fail(&self, e: io::Error) {
        let mut error = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        error.get_or_insert(e);
    }

    fn take_error(&self) -> Option<io::Error> {
        self.error.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// A copy of the error met so far, leaving it for [`Target::take_error`].
    fn peek_error(&self) -> Option<io::Error> {
        let error = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        error.as_ref().map(|e| io::Error::new(e.kind(), e.to_string()))
    }
}

struct Job {
    target: Arc<Target>,
    data: Vec<u8>,
    /// Offset of `data` in the file.
    offset: u64,
    /// Start sending these bytes to disk once written.
    writeback: bool,
}

/// The writing thread. [`BackgroundWriter::finish`] waits until every
/// queued buffer is written; dropping it instead (on an error) lets the
/// thread end by itself once its files are dropped.
pub struct BackgroundWriter {
    jobs: Option<Sender<Job>>,
    spare: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundWriter {
    /// Starts the writing thread.
    pub fn new() -> io::Result<BackgroundWriter> {
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(QUEUE);
        let (spare_tx, spare) = crossbeam_channel::bounded::<Vec<u8>>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("papersys-writer".to_string())
            .spawn(move || {
                for mut job in queue {
                    // A file that failed once gets no more bytes.
                    if job.target.error.lock().map(|e| e.is_none()).unwrap_or(false) {
                        match (&job.target.file).write_all(&job.data) {
                            Ok(()) if job.writeback => {
                                start_writeback(&job.target.file, job.offset, job.data.len())
                            }
                            Ok(()) => {}
                            Err(e) => job.target.fail(e),
                        }
                    }
                    job.data.clear();
                    let _ = spare_tx.try_send(job.data);
                }
            })?;
        Ok(BackgroundWriter {
            jobs: Some(jobs),
            spare,
            thread: Some(thread),
        })
    }

    /// A file whose bytes go through this thread.
    pub fn file(&self, file: File, path: PathBuf) -> QueuedFile {
        QueuedFile {
            target: Arc::new(Target {
                file,
                path,
                error: Mutex::new(None),
            }),
            buf: Vec::new(),
            offset: 0,
            writeback: false,
            jobs: self.jobs.clone(),
            spare: self.spare.clone(),
        }
    }

    /// Waits until every buffer handed over is written (errors stay with
    /// their file, for [`QueuedFile::into_file`]). Every [`QueuedFile`] must be closed first.
    pub fn finish(mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take()
            && let Err(panic) = thread.join()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

/// A file written through a [`BackgroundWriter`].
pub struct QueuedFile {
    target: Arc<Target>,
    buf: Vec<u8>,
    /// Bytes handed over so far.
    offset: u64,
    writeback: bool,
    jobs: Option<Sender<Job>>,
    spare: Receiver<Vec<u8>>,
}

impl QueuedFile {
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.target.path
    }

    /// Sends the file's bytes to disk as they are written from now on (the
    /// file will be kept and flushed).
    pub fn keep(&mut self) {
        self.writeback = true;
    }

    /// Appends `bytes`; an error the writing thread met on this file
    /// comes back here or from [`QueuedFile::into_file`].
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.buf.capacity() == 0 {
            self.buf = self.spare.try_recv().unwrap_or_default();
            self.buf.reserve(CHUNK);
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Queues the buffered bytes.
    fn hand_over(&mut self) -> io::Result<()> {
        if let Some(e) = self.target.peek_error() {
            return Err(e);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.buf);
        let len = data.len() as u64;
        let job = Job {
            target: Arc::clone(&self.target),
            data,
            offset: self.offset,
            writeback: self.writeback,
        };
        let sent = match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|e| e.into_inner()),
            None => Err(job),
        };
        if let Err(job) = sent {
            // The thread is gone: write here.
            (&self.target.file).write_all(&job.data)?;
        }
        self.offset += len;
        Ok(())
    }

    /// Queues what is buffered and lets go of the writing thread (which
    /// ends when every file is closed); the file is complete once the
    /// writer has finished ([`BackgroundWriter::finish`]). Call it once,
    /// after the last write.
    pub fn close(&mut self) -> io::Result<()> {
        let handed = self.hand_over();
        self.jobs = None;
        handed
    }

    /// The file, once the writer has finished: every byte written, or the
    /// first error met.
    pub fn into_file(mut self) -> io::Result<File> {
        self.jobs = None;
        self.hand_over()?;
        let target = Arc::try_unwrap(self.target)
            .map_err(|_| io::Error::other("internal: the file is still being written"))?;
        match target.take_error() {
            Some(e) => Err(e),
            None => Ok(target.file),
        }
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` to disk, without
/// waiting (advisory: an error only means the later `fsync` does it all).
fn start_writeback(file: &File, offset: u64, len: usize) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (libc::off64_t::try_from(offset), libc::off64_t::try_from(len)) else {
            return;
        };
        // SAFETY: the descriptor belongs to `file`, which is open for the
        // whole call; sync_file_range reads no memory of this process.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn bytes_arrive_in_order_across_files_and_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let writer = BackgroundWriter::new().unwrap();
        let mut files: Vec<QueuedFile> = (0..3)
            .map(|i| {
                let path = dir.path().join(format!("f{i}"));
                writer.file(File::create(&path).unwrap(), path)
            })
            .collect();
        files[1].keep();
        let mut expected = vec![Vec::new(); 3];
        for k in 0..120_000u32 {
            let i = (k % 3) as usize;
            let line = format!("{k},{}\n", "x".repeat((k % 97) as usize));
            files[i].write_all(line.as_bytes()).unwrap();
            expected[i].extend_from_slice(line.as_bytes());
        }
        for f in &mut files {
            f.close().unwrap();
        }
        writer.finish();
        for (i, f) in files.into_iter().enumerate() {
            let path = f.path().to_path_buf();
            drop(f.into_file().unwrap());
            let mut got = Vec::new();
            File::open(&path).unwrap().read_to_end(&mut got).unwrap();
            assert!(expected[i].len() > CHUNK, "the test must span several chunks");
            assert_eq!(got, expected[i], "file {i}");
        }
    }

    #[test]
    fn a_write_error_comes_back_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read-only");
        std::fs::write(&path, b"").unwrap();
        let writer = BackgroundWriter::new().unwrap();
        // Opened for reading only: every write fails.
        let mut file = writer.file(File::open(&path).unwrap(), path.clone());
        file.write_all(&vec![b'a'; CHUNK + 1]).unwrap();
        // The error may or may not have come back yet.
        let _ = file.close();
        writer.finish();
        assert_eq!(file.path(), path);
        assert!(file.into_file().is_err());
    }
}
