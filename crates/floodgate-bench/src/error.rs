//! The errors that stop a benchmark before or after it runs (not the errors it measures: those
//! are results, counted in the report).

use std::path::PathBuf;

/// EX_USAGE from sysexits.h: the command line or the scenario file is wrong.
pub const EXIT_USAGE: u8 = 64;

/// Why a benchmark could not run, or its report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A bad argument or combination of arguments.
    #[error("{0}")]
    Usage(String),
    /// The scenario file is not valid; `line` is 1-based when the problem has a place.
    #[error("{}", scenario_message(.file, *.line, .message))]
    Scenario { file: String, line: Option<usize>, message: String },
    /// The scenario file could not be read.
    #[error("cannot read scenario file {}: {source}", .path.display())]
    ReadScenario { path: PathBuf, source: std::io::Error },
    /// A report could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
    /// Something the benchmark itself needs failed (e.g. creating a histogram).
    #[error("internal error: {0}")]
    Internal(String),
}

impl BenchError {
    /// The process exit code for this error: 64 for usage and scenario problems, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            BenchError::Usage(_)
            | BenchError::Scenario { .. }
            | BenchError::ReadScenario { .. } => EXIT_USAGE,
            BenchError::Write { .. } | BenchError::Internal(_) => 1,
        }
    }
}

fn scenario_message(file: &str, line: Option<usize>, message: &str) -> String {
    match line {
        Some(line) => format!("{file}:{line}: {message}"),
        None => format!("{file}: {message}"),
    }
}
