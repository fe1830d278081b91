//! The tiny reader shipped with deepsynth (`models/tiny-reader/` in the repository, compiled into the binary): the
//! default base model, there offline and from any folder. `--model tiny-reader` names it; a local directory of
//! that name wins. Its recipe and figures are in the folder's README.md and BENCHMARKS.md ("Reading recipe").

use std::path::PathBuf;

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::checkpoint::{CONFIG, TOKENIZER, WEIGHTS};

/// The name that selects the bundled model wherever a model directory or Hub id is taken.
pub const NAME: &str = "tiny-reader";

const FILES: [(&str, &[u8]); 3] = [
    (CONFIG, include_bytes!("../../models/tiny-reader/config.json")),
    (TOKENIZER, include_bytes!("../../models/tiny-reader/tokenizer.json")),
    (WEIGHTS, include_bytes!("../../models/tiny-reader/model.safetensors")),
];

/// The bundled model as a model directory: its files are written once under the cache folder
/// (`DEEPSYNTH_CACHE`, else `$XDG_CACHE_HOME/deepsynth`, else `~/.cache/deepsynth`, else the temp folder), in a
/// folder named by their hash, so a binary with other weights never reads a stale copy.
pub fn dir() -> anyhow::Result<PathBuf> {
    let mut hash = Sha256::new();
    for (name, bytes) in FILES {
        hash.update(name.as_bytes());
        hash.update(bytes);
    }
    let digest: String = hash.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
    let dir = cache_root().join(format!("{NAME}-{digest}"));
    if dir.join(WEIGHTS).is_file() {
        return Ok(dir);
    }
    // Written beside its final place and renamed, so a reader never sees half a model (and two writers race safely).
    let parent = dir.parent().expect("cache folder has a parent");
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{NAME}-"))
        .tempdir_in(parent)
        .with_context(|| format!("cannot write the bundled model under {}", parent.display()))?;
    for (name, bytes) in FILES {
        std::fs::write(tmp.path().join(name), bytes)
            .with_context(|| format!("cannot write the bundled model under {}", parent.display()))?;
    }
    let tmp = tmp.keep();
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        anyhow::ensure!(dir.join(WEIGHTS).is_file(), "cannot write the bundled model to {}", dir.display());
    }
    Ok(dir)
}

fn cache_root() -> PathBuf {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("DEEPSYNTH_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|p| p.join("deepsynth")))
        .or_else(|| env("HOME").map(|p| p.join(".cache/deepsynth")))
        .unwrap_or_else(|| std::env::temp_dir().join("deepsynth"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::ModelConfig;

    #[test]
    fn the_bundled_model_is_a_reader_written_once() {
        let first = dir().unwrap();
        assert_eq!(dir().unwrap(), first);
        let config = ModelConfig::from_file(&first.join(CONFIG)).unwrap();
        // The reader geometry: an 8x8 grid of visual tokens on a 512 px page.
        assert_eq!(config.grid(), 8);
        for (name, bytes) in FILES {
            assert_eq!(std::fs::read(first.join(name)).unwrap(), bytes, "{name}");
        }
    }
}
