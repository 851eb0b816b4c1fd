//! Reading tensors from a safetensors file as f32, whatever their stored
//! precision (f32, f16, bf16).

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use papersys_backend_core::EmbedError;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

/// A memory-mapped safetensors file.
pub struct WeightsFile {
    path: PathBuf,
    mmap: Mmap,
}

impl WeightsFile {
    /// Maps `path` read-only.
    pub fn open(path: &Path) -> Result<Self, EmbedError> {
        let file =
            File::open(path).map_err(|e| EmbedError::Load(format!("cannot open {}: {e}", path.display())))?;
        // SAFETY: the file is opened read-only; like every loader of
        // memory-mapped weights we rely on nobody truncating it meanwhile.
        let mmap = unsafe { Mmap::map(&file) }
            .map_err(|e| EmbedError::Load(format!("cannot map {}: {e}", path.display())))?;
        Ok(WeightsFile {
            path: path.to_path_buf(),
            mmap,
        })
    }

    /// SHA-256 of the file, hex; read in chunks that are released behind
    /// the hash so the whole file is never resident at once.
    pub fn sha256(&self) -> String {
        const CHUNK: usize = 16 << 20;
        let mut hasher = Sha256::new();
        for (i, chunk) in self.mmap.chunks(CHUNK).enumerate() {
            hasher.update(chunk);
            release(&self.mmap, i * CHUNK, chunk.len());
        }
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses the header; the returned view borrows the mapping.
    pub fn tensors(&self) -> Result<Tensors<'_>, EmbedError> {
        let st = SafeTensors::deserialize(&self.mmap).map_err(|e| {
            EmbedError::Load(format!(
                "{} is not a valid safetensors file: {e}",
                self.path.display()
            ))
        })?;
        Ok(Tensors {
            path: &self.path,
            mmap: &self.mmap,
            st,
        })
    }
}

/// Drops the mapped pages of `mmap[offset..offset + len]` from this
/// process's memory once converted (they are re-read from the file if ever
/// touched again), so that loading does not hold the file and its f32 copy
/// at the same time.
fn release(mmap: &Mmap, offset: usize, len: usize) {
    #[cfg(unix)]
    {
        const PAGE: usize = 4096;
        let start = offset.div_ceil(PAGE) * PAGE;
        let end = (offset + len) / PAGE * PAGE;
        if end > start {
            // SAFETY: the mapping is private, read-only and never written, so
            // MADV_DONTNEED only discards clean pages that the kernel re-reads
            // from the file on the next access; no data is lost.
            let _ = unsafe {
                mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }
    #[cfg(not(unix))]
    let _ = (mmap, offset, len);
}

/// The tensors of one file, looked up by name with a common prefix.
pub struct Tensors<'a> {
    path: &'a Path,
    mmap: &'a Mmap,
    st: SafeTensors<'a>,
}

impl Tensors<'_> {
    /// True when the file holds a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok()
    }

    /// Finds which of `prefixes` the checkpoint's tensor names start with, by
    /// looking for `probe` after each.
    pub fn find_prefix(&self, prefixes: &[&str], probe: &str) -> Result<String, EmbedError> {
        prefixes
            .iter()
            .find(|p| self.contains(&format!("{p}{probe}")))
            .map(|p| p.to_string())
            .ok_or_else(|| {
                EmbedError::Load(format!(
                    "{}: no tensor {probe} (looked under the prefixes {prefixes:?})",
                    self.path.display()
                ))
            })
    }

    /// Tensor `name` as f32, checking it has `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EmbedError> {
        let view = self
            .st
            .tensor(name)
            .map_err(|_| EmbedError::Load(format!("{}: tensor {name} is missing", self.path.display())))?;
        if view.shape() != shape {
            return Err(EmbedError::Load(format!(
                "{}: tensor {name} has shape {:?}, expected {shape:?} from config.json",
                self.path.display(),
                view.shape()
            )));
        }
        let data = view.data();
        let offset = data.as_ptr() as usize - self.mmap.as_ptr() as usize;
        let out: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(EmbedError::Load(format!(
                    "{}: tensor {name} is {other:?}; only F32, F16 and BF16 are supported",
                    self.path.display()
                )));
            }
        };
        release(self.mmap, offset, data.len());
        Ok(out)
    }

    /// The first of `names` present, as f32 with `shape` (old checkpoints
    /// call LayerNorm parameters `gamma`/`beta`).
    pub fn get_any(&self, names: &[String], shape: &[usize]) -> Result<Vec<f32>, EmbedError> {
        match names.iter().find(|n| self.contains(n)) {
            Some(name) => self.get(name, shape),
            None => self.get(&names[0], shape),
        }
    }
}
