//! The `papersys` binary: parse arguments, set up logging, run the command,
//! map the outcome to an exit code (0 success, 1 runtime failure, 2 usage or
//! config error). Everything else lives in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use papersys::cli::{LowArgs, run};
use tracing_subscriber::EnvFilter;

// Large tensors and Arrow buffers come and go constantly; glibc malloc turns
// each into an mmap/munmap pair, mimalloc reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e`, the
/// same in mimalloc 2 and 3; the crate exports no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// mimalloc's default purge delay, in milliseconds.
const DEFAULT_PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Keeps freed memory for a second before returning it to the OS (instead
/// of 10 ms). Decoding a year file allocates a fresh buffer of several MB
/// per batch; returned and asked for again every batch, each one was
/// faulted in and zeroed anew (a sixth of building the search cache's
/// CPU time went to that zeroing). Leaves the option alone when it is not
/// at its default (a `MIMALLOC_PURGE_DELAY` set by the user, or another
/// mimalloc whose options differ).
fn keep_freed_memory_longer() {
    // SAFETY: plain calls into the allocator linked above, made before
    // this process starts any other thread (mimalloc's option calls are
    // not thread-safe); both take and return plain integers.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == DEFAULT_PURGE_DELAY_MS {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000);
        }
    }
}

fn main() -> ExitCode {
    keep_freed_memory_longer();
    let args = match LowArgs::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    init_logging(&args);
    match run(args) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

fn init_logging(args: &LowArgs) {
    let default = match (args.quiet, args.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(terminal);
    // Nightly jobs log to files: give them timestamps; people at a terminal
    // don't need them.
    if terminal {
        builder.without_time().init();
    } else {
        builder.init();
    }
}
