//! Reads test-vector files in Katzenpost hpqc's JSON format and checks every
//! vector against funion's own implementation.
//!
//! A file is either one section (`{"primitive": …, "vectors": [...]}`) or a
//! bundle of sections (`{"sections": [...]}`). Each section names the
//! primitive it tests; every section this crate knows is checked vector by
//! vector, and a section it does not know is reported, never skipped quietly.

use std::path::Path;

use serde_json::Value;

mod checks;

/// Why a file could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not JSON.
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The file is JSON but not in hpqc's test-vector format.
    #[error("not an hpqc test-vector file: {0}")]
    Format(String),
}

/// One vector that did not check out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The section (primitive) it belongs to.
    pub section: String,
    /// The vector's name.
    pub vector: String,
    /// What went wrong.
    pub reason: String,
}

/// What checking one file found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileReport {
    /// Sections checked, with how many vectors each held.
    pub sections: Vec<(String, usize)>,
    /// Sections whose primitive this checker does not know.
    pub unknown_sections: Vec<String>,
    /// Vectors that failed, in file order.
    pub failures: Vec<Failure>,
}

impl FileReport {
    /// Vectors checked, passed or not.
    pub fn checked(&self) -> usize {
        self.sections.iter().map(|(_, n)| n).sum()
    }

    /// Whether every vector passed and every section was known.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.unknown_sections.is_empty()
    }
}

/// The section names (hpqc `primitive` values) this checker knows.
pub fn known_sections() -> &'static [&'static str] {
    checks::KNOWN
}

/// Reads and checks one file.
pub fn check_file(path: &Path) -> Result<FileReport, FileError> {
    check_str(&std::fs::read_to_string(path)?)
}

/// Checks the text of one file.
pub fn check_str(json: &str) -> Result<FileReport, FileError> {
    let root: Value = serde_json::from_str(json)?;
    let object = root
        .as_object()
        .ok_or_else(|| FileError::Format("the top level is not an object".into()))?;
    match object.get("format_version") {
        Some(v) if v.as_u64() == Some(1) || v.as_str() == Some("1") => {}
        Some(v) => return Err(FileError::Format(format!("unsupported format_version {v}"))),
        None => return Err(FileError::Format("no format_version".into())),
    }
    let sections: Vec<&Value> = match (object.get("sections"), object.get("vectors")) {
        (Some(Value::Array(sections)), _) => sections.iter().collect(),
        (None, Some(_)) => vec![&root],
        _ => {
            return Err(FileError::Format(
                "neither a `sections` array nor a `vectors` array".into(),
            ))
        }
    };
    let mut report = FileReport::default();
    for section in sections {
        check_section(section, &mut report)?;
    }
    Ok(report)
}

fn check_section(section: &Value, report: &mut FileReport) -> Result<(), FileError> {
    let primitive = section
        .get("primitive")
        .and_then(Value::as_str)
        .ok_or_else(|| FileError::Format("a section without a `primitive` name".into()))?;
    let vectors = section
        .get("vectors")
        .and_then(Value::as_array)
        .ok_or_else(|| FileError::Format(format!("section {primitive} has no `vectors` array")))?;
    let Some(check) = checks::for_section(primitive) else {
        report.unknown_sections.push(primitive.to_string());
        return Ok(());
    };
    for (position, vector) in vectors.iter().enumerate() {
        let name = vector
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("#{position}"));
        if let Err(reason) = check(&checks::Vector(vector)) {
            report.failures.push(Failure {
                section: primitive.to_string(),
                vector: name,
                reason,
            });
        }
    }
    report.sections.push((primitive.to_string(), vectors.len()));
    Ok(())
}
