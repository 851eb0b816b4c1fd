//! Parquet input that damaged files cannot hang or crash.
//!
//! Two defences against faults of the parquet crate on damaged files, both
//! found by the fuzz targets (`fuzz/fuzz_targets/year_file.rs`, `backlog.rs`):
//!
//! * [`open_arrow`] checks every column chunk's byte range against the file
//!   before any page is read: the crate panics on a negative offset or size
//!   (apache/arrow-rs#6255; the check is the one Arrow C++ makes).
//! * The crate skips unknown Thrift fields of a page header with
//!   `io::copy(reader.take(n), sink)`, which treats end of file as success.
//!   A damaged header declaring a list of two billion doubles therefore asks
//!   the file for more bytes two billion times, one `read` syscall each: a
//!   hang. Every reader handed out here allows a few reads at the end of the
//!   file (as correct decoding may make) and then fails, so a damaged file
//!   is reported as damaged instead.
//!
//! Beyond those two, the decoders have more panics on hostile input than a
//! list of checks can keep up with (fuzzing also found a division by zero
//! and an out-of-bounds bit offset). [`catch_decoder_panic`] runs decoding
//! so that a panic becomes "this file is damaged", which the store handles
//! like any damaged file (reported, moved aside, its papers re-embedded).

use std::cell::Cell;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Once};

use bytes::Bytes;
use memmap2::Mmap;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::{ChunkReader, Length};

/// Why a Parquet file could not be opened for reading.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The OS refused.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The footer is unreadable or describes data the file cannot hold.
    #[error("{0}")]
    Damaged(String),
}

/// Opens `path` for Arrow reading: footer read and every column chunk's byte
/// range checked, so that no page read can panic on it.
pub fn open_arrow(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<ParquetInput>, OpenError> {
    let input = ParquetInput::open(path)?;
    let file_len = input.len();
    let builder = catch_decoder_panic(|| ParquetRecordBatchReaderBuilder::try_new(input))
        .map_err(OpenError::Damaged)?
        .map_err(|e| OpenError::Damaged(e.to_string()))?;
    check_column_chunks(builder.metadata(), file_len).map_err(OpenError::Damaged)?;
    Ok(builder)
}

thread_local! {
    /// Set while this thread decodes under [`catch_decoder_panic`].
    static DECODING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `decode` (Parquet/Arrow decoding of a file that may be damaged) and
/// turns a panic inside it into an error message. The panic is not printed:
/// the caller reports the file as damaged, which is what it is. A reader the
/// panic went through must not be used again.
pub fn catch_decoder_panic<T>(decode: impl FnOnce() -> T) -> Result<T, String> {
    install_quiet_panic_hook();
    let outer = DECODING.replace(true);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(decode));
    DECODING.set(outer);
    outcome.map_err(|payload| {
        format!(
            "the Parquet decoder failed on it ({})",
            crate::panic_message(payload.as_ref())
        )
    })
}

/// Keeps panics caught by [`catch_decoder_panic`] off stderr (as a debug log
/// instead); every other panic goes to the hook that was there before.
fn install_quiet_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if DECODING.get() {
                tracing::debug!("Parquet decoder panic, reported as a damaged file: {info}");
            } else {
                previous(info);
            }
        }));
    });
}

/// Every column chunk starts at a non-negative offset and ends inside the file.
fn check_column_chunks(metadata: &ParquetMetaData, file_len: u64) -> Result<(), String> {
    for (g, group) in metadata.row_groups().iter().enumerate() {
        for column in group.columns() {
            let start = column
                .dictionary_page_offset()
                .unwrap_or(column.data_page_offset());
            let len = column.compressed_size();
            let end = u64::try_from(start)
                .ok()
                .zip(u64::try_from(len).ok())
                .and_then(|(start, len)| start.checked_add(len));
            if end.is_none_or(|end| end > file_len) {
                return Err(format!(
                    "row group {g}, column {}: chunk at offset {start}, {len} bytes, outside the file's {file_len} bytes",
                    column.column_path()
                ));
            }
        }
    }
    Ok(())
}

/// Reads at the end of the file one reader may make before it fails; far
/// more than decoding a sound file makes, far fewer than a spin.
const EOF_READS_ALLOWED: u32 = 64;

/// A Parquet file opened for reading through [`ChunkReader`], with the
/// end-of-file guard.
///
/// The file is memory-mapped when it can be: pages are then decoded straight
/// from the page cache, without a `read` copy into a fresh buffer per page
/// (on a 2.8M-paper tree that copy, and the zeroing of the buffers it
/// needs, was a fifth of building the search cache). papersys replaces
/// these files only by rename, so a mapped file never changes under the
/// map. When mapping fails (a special file, an empty one) it is read.
pub struct ParquetInput {
    file: File,
    map: Option<Arc<Mmap>>,
}

impl ParquetInput {
    /// Opens `path` for reading.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        // SAFETY: a read-only map of a file papersys replaces only by
        // rename (see the type's doc); the length is taken from the map
        // itself, so no access below goes past what was mapped.
        let map = unsafe { Mmap::map(&file) }.ok().map(Arc::new);
        Ok(Self { file, map })
    }
}

impl Length for ParquetInput {
    fn len(&self) -> u64 {
        match &self.map {
            Some(map) => map.len() as u64,
            None => self.file.len(),
        }
    }
}

impl ChunkReader for ParquetInput {
    type T = PageRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(match &self.map {
            Some(map) => PageRead::Mapped(EofGuard::new(MapCursor {
                map: Arc::clone(map),
                at: usize::try_from(start).unwrap_or(usize::MAX),
            })),
            None => {
                let mut file = self.file.try_clone()?;
                file.seek(SeekFrom::Start(start))?;
                PageRead::Read(BufReader::new(EofGuard::new(file)))
            }
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let Some(map) = &self.map else {
            return self.file.get_bytes(start, length);
        };
        let range = usize::try_from(start)
            .ok()
            .and_then(|start| Some(start..start.checked_add(length)?))
            .filter(|range| range.end <= map.len());
        match range {
            Some(range) => Ok(Bytes::from_owner(MapSlice {
                map: Arc::clone(map),
                range,
            })),
            None => Err(parquet::errors::ParquetError::EOF(format!(
                "{length} bytes at offset {start} lie past the end of the file ({} bytes)",
                map.len()
            ))),
        }
    }
}

/// Bytes of a mapped file, kept alive by the map they point into.
struct MapSlice {
    map: Arc<Mmap>,
    range: std::ops::Range<usize>,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

/// A reading position in a mapped file.
pub struct MapCursor {
    map: Arc<Mmap>,
    at: usize,
}

impl Read for MapCursor {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = self.map.get(self.at..).unwrap_or(&[]);
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

/// What [`ParquetInput::get_read`] hands out: a guarded reader of the map
/// or of the file.
pub enum PageRead {
    /// From the memory map.
    Mapped(EofGuard<MapCursor>),
    /// From the file, buffered.
    Read(BufReader<EofGuard<File>>),
}

impl Read for PageRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            PageRead::Mapped(inner) => inner.read(buf),
            PageRead::Read(inner) => inner.read(buf),
        }
    }
}

/// A reader that errors once it has been read at its end too often.
pub struct EofGuard<R> {
    inner: R,
    eof_reads: u32,
}

impl<R> EofGuard<R> {
    fn new(inner: R) -> Self {
        Self { inner, eof_reads: 0 }
    }
}

impl<R: Read> Read for EofGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof_reads += 1;
            if self.eof_reads > EOF_READS_ALLOWED {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file ends inside data its page headers declare (damaged)",
                ));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_footer_whose_chunk_lies_outside_the_file_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2024.parquet");
        std::fs::write(&path, include_bytes!("testdata/negative-chunk-offset.parquet")).unwrap();
        match open_arrow(&path) {
            Err(OpenError::Damaged(message)) => assert!(message.contains("outside the file"), "{message}"),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("a chunk outside the file was accepted"),
        }
    }

    #[test]
    fn a_decoder_panic_becomes_an_error_and_other_panics_still_panic() {
        let caught = catch_decoder_panic(|| -> u32 { panic!("divide by zero") });
        assert_eq!(
            caught.unwrap_err(),
            "the Parquet decoder failed on it (divide by zero)"
        );
        assert_eq!(catch_decoder_panic(|| 7), Ok(7));
        assert!(!DECODING.get());
        let outside = std::panic::catch_unwind(|| panic!("a bug elsewhere"));
        assert!(outside.is_err());
    }

    /// The file both ways: mapped, and read (when it cannot be mapped).
    fn both_ways(path: &Path) -> [ParquetInput; 2] {
        let mapped = ParquetInput::open(path).unwrap();
        assert!(mapped.map.is_some());
        let read = ParquetInput {
            file: File::open(path).unwrap(),
            map: None,
        };
        [mapped, read]
    }

    #[test]
    fn a_reader_kept_at_the_end_fails_instead_of_spinning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short");
        std::fs::write(&path, b"abc").unwrap();
        for input in both_ways(&path) {
            let mut reader = input.get_read(1).unwrap();
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).unwrap();
            assert_eq!(rest, b"bc");
            // What parquet's Thrift skip does: copy "n more bytes" again and again at the end.
            let mut outcome = Ok(0);
            for _ in 0..1_000 {
                outcome = std::io::copy(&mut (&mut reader).take(8), &mut std::io::sink());
                if outcome.is_err() {
                    break;
                }
            }
            let error = outcome.unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
        }
    }

    #[test]
    fn bytes_past_the_end_are_an_error_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short");
        std::fs::write(&path, b"abcdef").unwrap();
        for input in both_ways(&path) {
            assert_eq!(input.len(), 6);
            assert_eq!(&input.get_bytes(2, 3).unwrap()[..], b"cde");
            assert_eq!(&input.get_bytes(6, 0).unwrap()[..], b"");
            assert!(input.get_bytes(4, 3).is_err());
            assert!(input.get_bytes(u64::MAX, 2).is_err());
        }
    }
}
