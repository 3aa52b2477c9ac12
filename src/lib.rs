//! bloomlink: privacy-preserving record linkage across agencies.
//!
//! Agencies turn their exports into keyed Bloom-filter encodings ([`encode`]) with a shared
//! linkage key ([`key`]) and schema ([`schema`]); the encodings are written to an encoding file
//! ([`format`](mod@format)) that carries no raw personal data. The pipeline modules are usable without the
//! command-line tool.

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
pub mod colmap;
pub mod date;
pub mod encode;
pub mod error;
pub mod evaluate;
pub mod format;
pub mod fsutil;
pub mod harden;
pub mod key;
pub mod linkage;
pub mod normalise;
pub mod risk;
pub mod schema;
pub mod signing;
pub mod similarity;
pub mod synth;
pub mod tokens;

pub use error::{Error, Result};
