//! The comparison table (placeholder, filled in next).
use crate::error::BenchError;

#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// File of JSON records written by the scenarios.
    pub records: std::path::PathBuf,
}

pub fn run(_args: &ReportArgs) -> Result<(), BenchError> {
    Ok(())
}
