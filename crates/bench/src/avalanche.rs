//! Scenario 4, avalanche (placeholder, filled in next).
use crate::Common;
use crate::error::BenchError;

#[derive(clap::Args, Debug, Clone)]
pub struct AvalancheArgs {}

pub async fn run(_common: &Common, _args: &AvalancheArgs) -> Result<(), BenchError> {
    Err(BenchError::Usage("avalanche is not built yet".into()))
}
