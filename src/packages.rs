//! Package specs for `install_packages`: validated with a real PEP 508 parser, normalized,
//! deduplicated, and turned into pip's argument vector.
//!
//! Only index packages by name are accepted: a name, optional extras, optional version
//! specifiers (`pandas[excel]>=2,<3`). Everything that would let a spec steer pip elsewhere —
//! options, URLs, VCS links, local paths, `name @ url`, environment markers — is refused with
//! a message saying what to write instead, before any container exists.

use std::collections::BTreeMap;
use std::str::FromStr;

use pep508_rs::{Requirement, VersionOrUrl};

/// Most specs accepted in one call.
pub const MAX_SPECS: usize = 50;

/// One validated package requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSpec {
    /// The PEP 503-normalized distribution name (`scikit-learn`).
    pub name: String,
    /// The requirement in canonical form, as given to pip (`scikit-learn>=1.4`).
    pub requirement: String,
    /// The parsed requirement, for checking an installed version against it.
    parsed: Requirement,
}

impl PackageSpec {
    /// True when `version` (as pip reports it) satisfies this spec's version specifiers.
    pub fn is_satisfied_by(&self, version: &str) -> bool {
        let Ok(version) = pep508_rs::pep440_rs::Version::from_str(version) else {
            return false;
        };
        match &self.parsed.version_or_url {
            None => true,
            Some(VersionOrUrl::VersionSpecifier(specifiers)) => specifiers.contains(&version),
            Some(VersionOrUrl::Url(_)) => false,
        }
    }
}

/// Why a list of specs was refused. Nothing is installed when any spec is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("no packages given: pass at least one name, e.g. [\"numpy\", \"pandas>=2\"]")]
    Empty,
    #[error("too many packages: {0} given, at most {MAX_SPECS} per call")]
    TooMany(usize),
    #[error("package #{0} is an empty string: give a package name such as \"numpy\"")]
    Blank(usize),
    #[error("`{0}`: pip options are not accepted; give package names, e.g. \"numpy>=1.26\"")]
    PipOption(String),
    #[error(
        "`{0}`: spaces and control characters are not allowed in a spec; write e.g. \"numpy>=1.26\""
    )]
    Whitespace(String),
    #[error(
        "`{0}`: URLs, VCS links and local paths are not accepted; give a package name from the index"
    )]
    NotFromIndex(String),
    #[error(
        "`{0}`: environment markers (`;`) are not accepted; give the package name and version only"
    )]
    Marker(String),
    #[error(
        "`{spec}` is not a valid package spec ({reason}); write e.g. \"numpy\" or \"pandas==2.*\""
    )]
    Invalid { spec: String, reason: String },
    #[error("`{0}` is given twice with different versions; give it once")]
    Conflict(String),
}

/// Validates and normalizes one call's list of specs (at most [`MAX_SPECS`]), dropping exact
/// duplicates.
pub fn parse_specs<S: AsRef<str>>(specs: &[S]) -> Result<Vec<PackageSpec>, SpecError> {
    if specs.is_empty() {
        return Err(SpecError::Empty);
    }
    if specs.len() > MAX_SPECS {
        return Err(SpecError::TooMany(specs.len()));
    }
    parse_spec_list(specs)
}

/// Validates and normalizes a list of any length: what an environment has accumulated over
/// many calls, installed again in one rebuild.
pub fn parse_spec_list<S: AsRef<str>>(specs: &[S]) -> Result<Vec<PackageSpec>, SpecError> {
    let mut by_name: BTreeMap<String, PackageSpec> = BTreeMap::new();
    for (index, spec) in specs.iter().enumerate() {
        let spec = parse_spec(spec.as_ref()).map_err(|e| match e {
            SpecError::Blank(_) => SpecError::Blank(index + 1),
            other => other,
        })?;
        match by_name.get(&spec.name) {
            Some(seen) if seen.requirement != spec.requirement => {
                return Err(SpecError::Conflict(spec.name));
            }
            Some(_) => {}
            None => {
                by_name.insert(spec.name.clone(), spec);
            }
        }
    }
    Ok(by_name.into_values().collect())
}

/// Validates one spec.
pub fn parse_spec(text: &str) -> Result<PackageSpec, SpecError> {
    let spec = text.trim();
    let owned = || spec.to_string();
    if spec.is_empty() {
        return Err(SpecError::Blank(0));
    }
    if spec.starts_with('-') {
        return Err(SpecError::PipOption(owned()));
    }
    if spec.contains("://") || spec.contains('@') || spec.starts_with(['.', '/', '~']) {
        return Err(SpecError::NotFromIndex(owned()));
    }
    if spec.contains(';') {
        return Err(SpecError::Marker(owned()));
    }
    if spec.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SpecError::Whitespace(owned()));
    }
    let parsed = Requirement::from_str(spec).map_err(|e| SpecError::Invalid {
        spec: owned(),
        reason: e.message.to_string(),
    })?;
    if matches!(parsed.version_or_url, Some(VersionOrUrl::Url(_))) {
        return Err(SpecError::NotFromIndex(owned()));
    }
    if !parsed.marker.is_true() {
        return Err(SpecError::Marker(owned()));
    }
    Ok(PackageSpec {
        name: parsed.name.to_string(),
        requirement: parsed.to_string(),
        parsed,
    })
}

/// Splits `PREINSTALLED_PACKAGES`: specs separated by spaces or commas. A comma followed by
/// a version operator continues the same spec (`numpy>=1,<2` stays one spec).
pub fn split_package_list(text: &str) -> Vec<String> {
    let mut specs: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        let mut continues = false;
        for piece in word.split(',') {
            if piece.is_empty() {
                continues = false;
                continue;
            }
            let is_operator = piece.starts_with(['<', '>', '=', '!', '~']);
            match specs.last_mut() {
                Some(last) if continues && is_operator => {
                    last.push(',');
                    last.push_str(piece);
                }
                _ => specs.push(piece.to_string()),
            }
            continues = true;
        }
    }
    specs
}

/// pip's argument vector: options first, then `--`, then the specs (never through a shell).
pub fn pip_install_args(specs: &[PackageSpec], allow_sdist: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "install",
        "--no-input",
        "--disable-pip-version-check",
        "--no-cache-dir",
        "--progress-bar=off",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    if !allow_sdist {
        args.push("--only-binary=:all:".to_string());
    }
    args.push("--".to_string());
    args.extend(specs.iter().map(|s| s.requirement.clone()));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_specs_are_normalized() {
        let cases = [
            ("numpy", "numpy", "numpy"),
            ("NumPy", "numpy", "numpy"),
            ("scikit_learn>=1.4", "scikit-learn", "scikit-learn>=1.4"),
            ("pandas==2.*", "pandas", "pandas==2.*"),
            ("six==1.16.0", "six", "six==1.16.0"),
            (
                "requests[socks,security]>=2,<3",
                "requests",
                "requests[socks,security]>=2,<3",
            ),
            (
                "Zope.Interface~=6.0",
                "zope-interface",
                "zope-interface~=6.0",
            ),
            ("  padded  ", "padded", "padded"),
        ];
        for (input, name, requirement) in cases {
            let spec = parse_spec(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(spec.name, name, "{input}");
            assert_eq!(
                spec.requirement.replace(", ", ","),
                requirement.replace(", ", ","),
                "{input}"
            );
        }
    }

    #[test]
    fn dangerous_or_malformed_specs_are_refused() {
        type Expect = fn(&SpecError) -> bool;
        let cases: &[(&str, Expect)] = &[
            ("", |e| matches!(e, SpecError::Blank(_))),
            ("   ", |e| matches!(e, SpecError::Blank(_))),
            ("--index-url=https://evil.example/simple", |e| {
                matches!(e, SpecError::PipOption(_))
            }),
            ("-r", |e| matches!(e, SpecError::PipOption(_))),
            ("-e", |e| matches!(e, SpecError::PipOption(_))),
            ("--target=/tmp", |e| matches!(e, SpecError::PipOption(_))),
            ("https://evil.example/pkg.whl", |e| {
                matches!(e, SpecError::NotFromIndex(_))
            }),
            ("git+https://github.com/x/y", |e| {
                matches!(e, SpecError::NotFromIndex(_))
            }),
            ("pkg@https://evil.example/pkg.whl", |e| {
                matches!(e, SpecError::NotFromIndex(_))
            }),
            ("./local/dir", |e| matches!(e, SpecError::NotFromIndex(_))),
            ("/abs/path.whl", |e| matches!(e, SpecError::NotFromIndex(_))),
            ("~/pkg", |e| matches!(e, SpecError::NotFromIndex(_))),
            ("numpy;python_version>'3'", |e| {
                matches!(e, SpecError::Marker(_))
            }),
            ("numpy >= 1.0", |e| matches!(e, SpecError::Whitespace(_))),
            ("numpy\n--index-url", |e| {
                matches!(e, SpecError::Whitespace(_))
            }),
            ("num\u{7}py", |e| matches!(e, SpecError::Whitespace(_))),
            ("numpy>=>1", |e| matches!(e, SpecError::Invalid { .. })),
            ("名前", |e| matches!(e, SpecError::Invalid { .. })),
            ("numpy[", |e| matches!(e, SpecError::Invalid { .. })),
        ];
        for (input, expected) in cases {
            let error = parse_spec(input).expect_err(input);
            assert!(expected(&error), "{input:?} gave {error:?}");
        }
    }

    #[test]
    fn list_rules_empty_too_many_duplicates_conflicts() {
        assert_eq!(parse_specs::<&str>(&[]), Err(SpecError::Empty));
        let many: Vec<String> = (0..51).map(|i| format!("pkg{i}")).collect();
        assert_eq!(parse_specs(&many), Err(SpecError::TooMany(51)));
        let specs = parse_specs(&["six", "Six", "numpy"]).unwrap();
        assert_eq!(
            specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["numpy", "six"]
        );
        assert_eq!(
            parse_specs(&["six==1", "six==2"]),
            Err(SpecError::Conflict("six".into()))
        );
        assert_eq!(parse_specs(&["ok", ""]), Err(SpecError::Blank(2)));
    }

    #[test]
    fn errors_say_what_to_write_instead() {
        let message = parse_spec("--extra-index-url=x").unwrap_err().to_string();
        assert!(message.contains("numpy>=1.26"), "{message}");
    }

    #[test]
    fn installed_versions_are_checked_against_specifiers() {
        assert!(parse_spec("six").unwrap().is_satisfied_by("1.16.0"));
        assert!(parse_spec("six==1.16.0").unwrap().is_satisfied_by("1.16.0"));
        assert!(!parse_spec("six==1.15.0").unwrap().is_satisfied_by("1.16.0"));
        assert!(parse_spec("pandas==2.*").unwrap().is_satisfied_by("2.2.3"));
        assert!(!parse_spec("pandas>=2,<3").unwrap().is_satisfied_by("3.0.0"));
    }

    #[test]
    fn preinstalled_lists_split_on_spaces_and_commas() {
        assert_eq!(
            split_package_list("numpy pandas==2.*"),
            ["numpy", "pandas==2.*"]
        );
        assert_eq!(
            split_package_list("numpy,pandas, six"),
            ["numpy", "pandas", "six"]
        );
        assert_eq!(
            split_package_list("numpy>=1,<2,pandas"),
            ["numpy>=1,<2", "pandas"]
        );
        assert!(split_package_list("  ").is_empty());
    }

    #[test]
    fn pip_gets_options_first_then_specs_after_a_separator() {
        let specs = parse_specs(&["six==1.16.0"]).unwrap();
        let args = pip_install_args(&specs, false);
        let separator = args.iter().position(|a| a == "--").unwrap();
        assert_eq!(&args[separator + 1..], ["six==1.16.0"]);
        assert!(args[..separator].contains(&"--only-binary=:all:".to_string()));
        assert!(args[..separator].contains(&"--no-input".to_string()));
        assert!(!pip_install_args(&specs, true).contains(&"--only-binary=:all:".to_string()));
    }
}
