//! `-o text|json|yaml`: one flag with the same values and the same default for every command
//! that prints a result (`plan`, `apply`, `policy simulate|check|merge`, `iam-policy`), so a
//! script learns it once. `text` is for people; `json` and `yaml` carry the same document.

use std::io::Write;

use anyhow::Context as _;
use serde::Serialize;

/// The formats. Declared on each command as
/// `#[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]`;
/// tests/cli_help.rs checks that every command that has `--output` declares it that way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people.
    #[default]
    Text,
    /// Indented JSON.
    Json,
    /// YAML (the same document as json).
    Yaml,
}

impl OutputFormat {
    /// Writes `doc` as indented JSON or as YAML; `Text` callers print their own form and
    /// call this only for the structured ones.
    pub fn write_doc(self, out: &mut dyn Write, doc: &impl Serialize) -> anyhow::Result<()> {
        match self {
            Self::Yaml => {
                let text = yaml_serde::to_string(doc).context("serialising output")?;
                write!(out, "{text}")?;
            }
            Self::Json | Self::Text => {
                let text = serde_json::to_string_pretty(doc).context("serialising output")?;
                writeln!(out, "{text}")?;
            }
        }
        Ok(())
    }

    /// [`OutputFormat::write_doc`] to stdout.
    pub fn print_doc(self, doc: &impl Serialize) -> anyhow::Result<()> {
        self.write_doc(&mut std::io::stdout().lock(), doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_carry_the_same_document() {
        let doc = serde_json::json!({"a": [1, "x"], "b": {"c": true}});
        let mut j = Vec::new();
        OutputFormat::Json.write_doc(&mut j, &doc).unwrap();
        let mut y = Vec::new();
        OutputFormat::Yaml.write_doc(&mut y, &doc).unwrap();
        let from_json: serde_json::Value = serde_json::from_slice(&j).unwrap();
        let from_yaml: serde_json::Value = yaml_serde::from_slice(&y).unwrap();
        assert_eq!(from_json, doc);
        assert_eq!(from_yaml, doc);
    }
}
