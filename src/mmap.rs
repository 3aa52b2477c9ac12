//! The one place outside the SIMD kernels that needs `unsafe`: memory-mapping an encoding file.

#![allow(unsafe_code)]

use std::fs::File;

/// Maps `file` read-only.
pub fn map_readonly(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: memory-mapping is sound as long as the file is not modified or truncated while
    // mapped. Encoding files are written once, atomically (temp file + rename), so a finished
    // file is never rewritten in place; a different process truncating it deliberately could
    // still cause SIGBUS, which is documented in docs/FORMAT.md. Every byte we later interpret
    // is covered by the SHA-256 check performed right after mapping.
    unsafe { memmap2::Mmap::map(file) }
}
