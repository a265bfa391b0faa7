//! Configuration errors: always the file, the line and the reason.

use std::path::{Path, PathBuf};

#[derive(Clone, Debug, thiserror::Error)]
#[error("{}:{line}: {reason}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based; 0 when the whole file is at fault (cannot be read).
    pub line: usize,
    pub reason: String,
}

impl ConfigError {
    pub fn at(path: &Path, line: usize, reason: impl Into<String>) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            line,
            reason: reason.into(),
        }
    }
    pub fn io(path: &Path, reason: impl Into<String>) -> Self {
        Self::at(path, 0, reason)
    }
}
