//! Data: the dataset record, converters from public QA datasets, and JSONL tooling (mix, split, validate).

pub mod convert;
pub mod error;
pub mod io;
pub mod record;

pub use error::{BadInput, Location};
pub use record::Record;
