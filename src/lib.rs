//! deepsynth: fine-tune and serve document question-answering models of the DeepSeek-OCR kind.
//!
//! `data` turns public QA datasets into one JSONL record schema; `page` turns documents into the page images and
//! pixels the model sees; `engine` is the model (vision encoder, decoder, LoRA-capable layers); `cli` is the command
//! line over it all.

pub mod cli;
pub mod data;
pub mod engine;
pub mod eval;
pub mod instruct;
pub mod page;
pub mod quickstart;
pub mod serve;
pub mod train;
