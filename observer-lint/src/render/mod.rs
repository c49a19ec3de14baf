//! Output formats. Each renderer is pure: the outcome in, text out.

mod json;
mod junit;
mod sarif;
mod text;

use super::outcome::{FailLevel, Outcome};

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per finding with its fix, and a summary (for people).
    Text,
    /// One JSON document (schema: docs/lint.schema.json).
    Json,
    /// JUnit XML: a test suite per file, a test case per container.
    Junit,
    /// SARIF 2.1.0, for code-scanning UIs.
    Sarif,
}

pub fn render(outcome: &Outcome, format: Format, fail_level: FailLevel) -> String {
    match format {
        Format::Text => text::render(outcome, fail_level),
        Format::Json => json::render(outcome, fail_level),
        Format::Junit => junit::render(outcome, fail_level),
        Format::Sarif => sarif::render(outcome),
    }
}
