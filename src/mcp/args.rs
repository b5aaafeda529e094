//! The tools' arguments and structured answers, as clients see them in `tools/list`: the
//! argument structs (named exactly as the original TypeScript server's), `inputData` read
//! straight into one stdin buffer, and the structured parts of the answers.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::sandbox::{MAX_INPUT_LINES, SessionEnd, StdinLines};

/// Arguments of `execute_python`, named exactly as the original TypeScript server's.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecutePythonArgs {
    /// The Python source code to run as the main program.
    pub code: String,
    /// Lines given to the program as standard input (each followed by a newline), then EOF.
    // Described as a plain array (clients such as the MCP Inspector's CLI turn a nullable
    // array into a string); `null` is still accepted, as the original server did.
    #[serde(rename = "inputData", default)]
    #[schemars(with = "Vec<String>")]
    pub input_data: InputData,
    /// A session from create_session: the code runs in that session's interpreter, seeing
    /// the variables, imports, functions and /tmp files of its earlier calls. Leave it out
    /// (or empty) for a fresh interpreter.
    #[serde(default)]
    #[schemars(with = "String")]
    pub session_id: Option<String>,
}

/// Arguments of `close_session`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CloseSessionArgs {
    /// The id create_session answered.
    pub session_id: String,
}

/// `inputData`, read straight into one stdin buffer as rmcp hands it over: no `Vec<String>`
/// of it ever exists (four million empty strings would be ~100 MB of them), and past
/// [`MAX_INPUT_LINES`] entries the call is refused while it is read. `null` is no input, as
/// in the original server.
#[derive(Debug, Default)]
pub struct InputData(pub StdinLines);

impl<'de> Deserialize<'de> for InputData {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};

        struct Line<'a>(&'a mut StdinLines);

        impl<'de> DeserializeSeed<'de> for Line<'_> {
            type Value = ();
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_str(self)
            }
        }

        impl Visitor<'_> for Line<'_> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string (one line of stdin)")
            }
            fn visit_str<E: de::Error>(self, line: &str) -> Result<(), E> {
                self.0.push(line);
                Ok(())
            }
        }

        struct Lines;

        impl<'de> Visitor<'de> for Lines {
            type Value = InputData;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of strings (the lines of stdin)")
            }
            fn visit_unit<E: de::Error>(self) -> Result<InputData, E> {
                Ok(InputData::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<InputData, E> {
                Ok(InputData::default())
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<InputData, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InputData, A::Error> {
                let mut stdin = StdinLines::default();
                while seq.next_element_seed(Line(&mut stdin))?.is_some() {
                    if stdin.lines > MAX_INPUT_LINES {
                        return Err(de::Error::custom(format_args!(
                            "inputData has more than {MAX_INPUT_LINES} entries; each entry is \
                             one line of stdin, so join lines into fewer entries or read the \
                             data from code"
                        )));
                    }
                }
                Ok(InputData(stdin))
            }
        }

        deserializer.deserialize_any(Lines)
    }
}

/// Arguments of `install_packages`, named exactly as the original server's.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct InstallPackagesArgs {
    /// Package specs from the package index: a name with optional extras and version
    /// specifiers, e.g. "numpy", "pandas==2.*", "requests[socks]>=2.31".
    pub packages: Vec<String>,
}

/// The structured answer of `list_packages`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PackageList {
    /// Every installed distribution, sorted by name.
    pub packages: Vec<InstalledPackage>,
}

/// One installed distribution.
#[derive(Debug, Serialize, JsonSchema)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
}

/// The structured part of an `execute_python` answer (stdout and stderr are text content).
#[derive(Debug, Serialize, JsonSchema)]
pub struct ExecutionStatus {
    /// The program's exit status; 137 when it was killed.
    pub exit_code: i64,
    /// True when the program ran past the time limit and was killed.
    pub timed_out: bool,
    /// True when the program was killed for using more memory than allowed.
    pub oom_killed: bool,
    /// True when part of the output was left out (marked in the text where it was).
    pub truncated: bool,
    /// Run time in milliseconds.
    pub duration_ms: u64,
    /// Calls in a session only: null while the session goes on, else why it ended with this
    /// call (its state is gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_ended: Option<SessionEnd>,
    /// With an egress allowlist only: each host and port the program tried through the
    /// proxy, allowed or blocked (with the reason), its connections and bytes; empty when it
    /// tried none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<crate::egress::Attempt>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(value: serde_json::Value) -> Result<ExecutePythonArgs, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn input_data_becomes_one_stdin_buffer_of_lines() {
        let parsed = args(serde_json::json!({"code": "", "inputData": ["a", "", "é"]})).unwrap();
        assert_eq!(parsed.input_data.0.bytes, "a\n\né\n".as_bytes());
        assert_eq!(parsed.input_data.0.lines, 3);
        for absent in [
            serde_json::json!({"code": ""}),
            serde_json::json!({"code": "", "inputData": null}),
            serde_json::json!({"code": "", "inputData": []}),
        ] {
            assert!(args(absent).unwrap().input_data.0.bytes.is_empty());
        }
    }

    #[test]
    fn input_data_past_its_entry_cap_or_not_strings_is_refused() {
        let lines = vec![serde_json::Value::String(String::new()); MAX_INPUT_LINES + 1];
        let error = args(serde_json::json!({"code": "", "inputData": lines})).unwrap_err();
        assert!(
            error.to_string().contains("more than 100000 entries"),
            "{error}"
        );
        let lines = vec![serde_json::Value::String(String::new()); MAX_INPUT_LINES];
        assert!(args(serde_json::json!({"code": "", "inputData": lines})).is_ok());
        for bad in [
            serde_json::json!(["a", 1]),
            serde_json::json!("a"),
            serde_json::json!([["a"]]),
        ] {
            assert!(args(serde_json::json!({"code": "", "inputData": bad})).is_err());
        }
    }
}
