//! Backup labels: validated once, here, with the same rule as `backup-db.sh` (pure).

use crate::error::{Error, Result};

/// Longest label accepted (`pre-deploy-<40-hex SHA>` is 51).
pub const MAX_LEN: usize = 80;

/// A validated backup label: 1-80 characters of `[A-Za-z0-9._-]`, starting with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label(pub(super) String);

impl Label {
    /// Exit 2 (`Error::Usage`) on anything else: `/`, spaces, `;`, `$()`, quotes, too long, empty.
    pub fn parse(s: &str) -> Result<Label> {
        match check(s) {
            Ok(()) => Ok(Label(s.to_string())),
            Err(why) => Err(Error::usage(format!(
                "invalid backup label {}: {why} (allowed: 1-{MAX_LEN} characters of [A-Za-z0-9._-], \
                 starting with a letter or digit)",
                shown(s)
            ))),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn check(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.len() > MAX_LEN {
        return Err(format!("it is {} bytes long", s.len()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("{c:?} is not allowed"));
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric() {
        return Err("it must start with a letter or digit".into());
    }
    Ok(())
}

/// The label as shown in an error: debug-quoted and cut, so control characters and huge input
/// cannot mess up the terminal.
fn shown(s: &str) -> String {
    let cut: String = s.chars().take(40).collect();
    if cut.len() < s.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ExitCode;

    #[test]
    fn good_labels() {
        for l in [
            "nightly",
            "pre-deploy-abc1234",
            "v1.2.3",
            "a",
            "A_b-c.d",
            &"x".repeat(80),
        ] {
            assert_eq!(Label::parse(l).unwrap().as_str(), l);
        }
    }

    #[test]
    fn bad_labels_are_usage_errors() {
        let long = "a".repeat(300);
        for l in [
            "",
            "a/b",
            "a b",
            "a;b",
            "$(touch x)",
            "`id`",
            "it's",
            "a\"b",
            "-x",
            ".hidden",
            "..",
            "a\nb",
            "ä",
            &long,
            &"x".repeat(81),
        ] {
            let e = Label::parse(l).unwrap_err();
            assert_eq!(e.exit_code(), ExitCode::Usage, "{l:?}");
            assert!(e.to_string().len() < 300, "error echoes the whole input");
        }
    }

    proptest::proptest! {
        #[test]
        fn accepted_labels_are_safe_file_name_parts(s in "\\PC{0,100}") {
            if let Ok(l) = Label::parse(&s) {
                proptest::prop_assert!(l.as_str().len() <= MAX_LEN);
                proptest::prop_assert!(l.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
                proptest::prop_assert_eq!(crate::process::quote(l.as_str()), l.as_str().to_string());
            }
        }

        #[test]
        fn the_charset_is_accepted(s in "[A-Za-z0-9][A-Za-z0-9._-]{0,79}") {
            proptest::prop_assert!(Label::parse(&s).is_ok());
        }
    }
}
