//! Ctrl-C and SIGTERM for long commands.
//!
//! The first signal asks the command to stop at its next safe point: it
//! finishes what is in hand, commits it and reports. A second signal ends
//! the process at once with [`EXIT_INTERRUPTED`], which the store's crash
//! safety makes harmless (at most the vectors since the last checkpoint are
//! computed again).
//!
//! A long command calls [`install`] once when it starts and polls
//! [`requested`] wherever it can stop cleanly. Commands that never call
//! `install` keep the default behaviour (the signal ends the process).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Exit code of a command stopped by a signal: 128 + SIGINT, as shells
/// report a Ctrl-C.
pub const EXIT_INTERRUPTED: i32 = 130;

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Handles SIGINT and SIGTERM from now on: the first sets the flag
/// [`requested`] reads, a second exits at once with [`EXIT_INTERRUPTED`].
/// Calling it again does nothing.
pub fn install() -> std::io::Result<()> {
    let mut result = Ok(());
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // The shutdown is registered first, so it fires only when an
            // earlier signal already set the flag.
            let registered =
                signal_hook::flag::register_conditional_shutdown(signal, EXIT_INTERRUPTED, Arc::clone(&flag))
                    .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&flag)));
            if let Err(e) = registered {
                result = Err(e);
            }
        }
        flag
    });
    result
}

/// True once SIGINT or SIGTERM arrived (after [`install`]).
pub fn requested() -> bool {
    FLAG.get().is_some_and(|flag| flag.load(Ordering::SeqCst))
}
