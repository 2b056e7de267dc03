//! [`error_chain`]: an error and its causes on one line, for logs and for the
//! `error` fields of `proxy inspect`.
//!
//! A leaf: imports nothing from the crate, so any module may use it.

/// `error` and its sources, as `anyhow`'s `{:#}` prints them (`a: b: c`): the
/// kernel's reason (`Operation not permitted`) is usually the last.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_follow_the_error_on_one_line() {
        let error = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&error), "outer: inner");
    }
}
