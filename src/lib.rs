//! deepsynth: fine-tune and serve document question-answering models of the DeepSeek-OCR kind.
//!
//! `data` turns public QA datasets into one JSONL record schema; `cli` is the command line over it all.

pub mod cli;
pub mod data;
pub mod page;
