//! Not built yet.

use anyhow::Result;

use super::{ConvertOptions, Sink};

pub fn convert(_opts: &ConvertOptions, _sink: &mut Sink) -> Result<()> {
    anyhow::bail!("`deepsynth convert marco` is not built yet")
}
