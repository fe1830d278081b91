//! Data: the dataset record, converters from public QA datasets, and JSONL tooling (mix, split, validate).

pub mod convert;
pub mod error;
pub mod io;
pub mod jsonl;
pub mod mix;
pub mod record;
pub mod split;
pub mod synth;
pub mod validate;

pub use error::{BadInput, Location};
pub use record::Record;
