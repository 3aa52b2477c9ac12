//! `bloomlink schema …`

use std::path::PathBuf;

use bloomlink::schema::{Schema, DEFAULT_SCHEMA_TOML};
use clap::Subcommand;

use super::output;

#[derive(Subcommand, Debug)]
pub enum SchemaCommand {
    /// Print the built-in default schema for UK child records (TOML).
    Default,
    /// Validate a schema and print its digest (the default schema's if no file is given).
    Digest {
        /// Schema file (TOML).
        file: Option<PathBuf>,
    },
}

pub fn run(cmd: SchemaCommand) -> anyhow::Result<()> {
    match cmd {
        SchemaCommand::Default => output::print(DEFAULT_SCHEMA_TOML),
        SchemaCommand::Digest { file } => {
            let s = match file {
                Some(f) => Schema::load(&f)?,
                None => Schema::default_uk(),
            };
            output::print(&format!("{}\n", s.digest))
        }
    }
}
