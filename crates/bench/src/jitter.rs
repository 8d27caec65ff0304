//! Scenario 3, jitter (placeholder, filled in next).
use crate::Common;
use crate::error::BenchError;

#[derive(clap::Args, Debug, Clone)]
pub struct JitterArgs {}

pub async fn run(_common: &Common, _args: &JitterArgs) -> Result<(), BenchError> {
    Err(BenchError::Usage("jitter is not built yet".into()))
}
