//! One line of `doctor`'s report: its verdict, its check, what was found and the next step.

/// How a finding reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// One line of the report, and the next step when it is not fine.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub verdict: Verdict,
    pub check: &'static str,
    pub detail: String,
    pub next: Option<String>,
}

pub(super) fn finding(
    verdict: Verdict,
    check: &'static str,
    detail: String,
    next: Option<&str>,
) -> Finding {
    Finding {
        verdict,
        check,
        detail,
        next: next.map(String::from),
    }
}
