//! The `bloomlink` command-line tool. Argument parsing and printing only; the work is done by
//! the library.

#![forbid(unsafe_code)]

mod cli;

/// mimalloc: faster and with better locality than the system allocator for the encoder's many
/// small cache entries (measured in the closing note of the encode issue).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(cli::main());
}
