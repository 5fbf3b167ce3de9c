//! `cargo xtask check-workflows [FILE…]`: the rules a workflow that deploys must keep.
//!
//! - No long-lived AWS keys: no `aws-access-key-id` / `aws-secret-access-key` input and no
//!   `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` secret; credentials come from GitHub's
//!   OIDC token (`role-to-assume`).
//! - Every `uses:` is pinned to a full commit SHA (a tag or branch can be moved to other
//!   code after review) with the version in a comment (`@<40 hex> # v5.0.0`), so an update
//!   is a reviewed change. Local actions (`./…`) are the repository's own code; a
//!   `docker://` image must be pinned by digest.
//!
//! The check reads lines, not a YAML tree, because the version comments are part of the
//! rule and a YAML parser drops them. Comments are ignored for the key rules.

use std::fmt;

/// One broken rule, at a line of a workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub line: usize,
    pub rule: Rule,
    pub found: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    AccessKeyInput,
    AccessKeySecret,
    UsesNotPinnedToSha,
    UsesWithoutVersionComment,
    DockerImageNotPinnedToDigest,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, fix) = match self.rule {
            Rule::AccessKeyInput => (
                "passes a long-lived AWS access key",
                "use GitHub OIDC: `permissions: id-token: write` and `role-to-assume:` (README, GitHub Actions)",
            ),
            Rule::AccessKeySecret => (
                "reads a long-lived AWS access key from secrets",
                "delete the secret and assume a role with GitHub OIDC (`role-to-assume:`)",
            ),
            Rule::UsesNotPinnedToSha => (
                "uses an action by a tag or branch, which can be moved to other code",
                "pin it to the full 40-character commit SHA of the release, with the version in a comment: `owner/action@<sha> # v1.2.3`",
            ),
            Rule::UsesWithoutVersionComment => (
                "pins an action to a SHA without saying which release it is",
                "add the version as a comment after it: `@<sha> # v1.2.3`",
            ),
            Rule::DockerImageNotPinnedToDigest => (
                "uses a Docker image by tag",
                "pin it by digest: `docker://image@sha256:<64 hex>`",
            ),
        };
        write!(
            f,
            "line {}: `{}` {what}; {fix}",
            self.line,
            self.found.trim()
        )
    }
}

/// Every rule the workflow text breaks, in line order.
pub fn check(text: &str) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let (code, comment) = split_comment(raw);
        let key_value = code.trim_start().trim_start_matches("- ").trim_start();
        for key in ["aws-access-key-id", "aws-secret-access-key"] {
            if key_value.starts_with(&format!("{key}:")) {
                violations.push(Violation {
                    line,
                    rule: Rule::AccessKeyInput,
                    found: code.to_string(),
                });
            }
        }
        let upper = code.to_ascii_uppercase();
        if ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
            .iter()
            .any(|name| upper.contains(&format!("SECRETS.{name}")))
        {
            violations.push(Violation {
                line,
                rule: Rule::AccessKeySecret,
                found: code.to_string(),
            });
        }
        if let Some(value) = key_value.strip_prefix("uses:") {
            let reference = value.trim().trim_matches(|c| c == '"' || c == '\'');
            if let Some(rule) = uses_rule(reference, comment) {
                violations.push(Violation {
                    line,
                    rule,
                    found: format!("uses: {reference}"),
                });
            }
        }
    }
    violations
}

fn uses_rule(reference: &str, comment: Option<&str>) -> Option<Rule> {
    if reference.starts_with("./") {
        return None;
    }
    if let Some(image) = reference.strip_prefix("docker://") {
        let pinned = image
            .rsplit_once("@sha256:")
            .is_some_and(|(_, digest)| is_hex(digest, 64));
        return (!pinned).then_some(Rule::DockerImageNotPinnedToDigest);
    }
    let Some((_, version)) = reference.rsplit_once('@') else {
        return Some(Rule::UsesNotPinnedToSha);
    };
    if !is_hex(version, 40) {
        return Some(Rule::UsesNotPinnedToSha);
    }
    let names_a_version = comment.is_some_and(|text| {
        text.split_whitespace().any(|word| {
            word.trim_start_matches('v')
                .starts_with(|c: char| c.is_ascii_digit())
        })
    });
    (!names_a_version).then_some(Rule::UsesWithoutVersionComment)
}

fn is_hex(text: &str, length: usize) -> bool {
    text.len() == length && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The code of a line and its comment: a `#` that starts the line or follows a space,
/// outside quotes.
fn split_comment(line: &str) -> (&str, Option<&str>) {
    let mut quote = None;
    let mut previous = ' ';
    for (index, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(open), _) if c == open => quote = None,
            (None, '#') if previous.is_whitespace() => {
                return (&line[..index], Some(&line[index + 1..]));
            }
            _ => {}
        }
        previous = c;
    }
    (line, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECKOUT: &str = "actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8";

    fn rules(text: &str) -> Vec<Rule> {
        check(text).into_iter().map(|v| v.rule).collect()
    }

    #[test]
    fn a_sha_pinned_action_with_its_version_passes() {
        let text = format!("    steps:\n      - uses: {CHECKOUT} # v5.0.0\n");
        assert_eq!(rules(&text), []);
        let quoted = format!("      - uses: \"{CHECKOUT}\"  # v5\n");
        assert_eq!(rules(&quoted), []);
    }

    #[test]
    fn tags_branches_and_short_shas_fail() {
        for reference in [
            "actions/checkout@v5",
            "actions/checkout@main",
            "actions/checkout@08c6903",
            "actions/checkout",
            "actions/cache/restore@v4 # 0400d5f644dc74513175e3cd8d07132dd4860809",
        ] {
            let text = format!("      - uses: {reference}\n");
            assert_eq!(rules(&text), [Rule::UsesNotPinnedToSha], "{reference}");
        }
    }

    #[test]
    fn a_sha_without_a_version_comment_fails() {
        let text = format!("      - uses: {CHECKOUT}\n");
        assert_eq!(rules(&text), [Rule::UsesWithoutVersionComment]);
        let text = format!("      - uses: {CHECKOUT} # pinned\n");
        assert_eq!(rules(&text), [Rule::UsesWithoutVersionComment]);
    }

    #[test]
    fn local_actions_pass_and_docker_images_need_a_digest() {
        assert_eq!(rules("      - uses: ./.github/actions/setup\n"), []);
        assert_eq!(
            rules("      - uses: docker://alpine:3.20\n"),
            [Rule::DockerImageNotPinnedToDigest]
        );
        let digest = "a".repeat(64);
        assert_eq!(
            rules(&format!("      - uses: docker://alpine@sha256:{digest}\n")),
            []
        );
    }

    #[test]
    fn access_keys_fail_as_inputs_and_as_secrets() {
        let text = "\
        with:
          aws-access-key-id: ${{ secrets.AWS_ACCESS_KEY_ID }}
          aws-secret-access-key: ${{ secrets.aws_secret_access_key }}
        env:
          KEY: ${{ secrets.AWS_ACCESS_KEY_ID }}
";
        let found = check(text);
        assert_eq!(
            found.iter().map(|v| (v.line, v.rule)).collect::<Vec<_>>(),
            [
                (2, Rule::AccessKeyInput),
                (2, Rule::AccessKeySecret),
                (3, Rule::AccessKeyInput),
                (3, Rule::AccessKeySecret),
                (5, Rule::AccessKeySecret),
            ]
        );
        assert!(found[0].to_string().contains("role-to-assume"));
    }

    #[test]
    fn comments_mentioning_keys_pass() {
        let text = "      # no aws-access-key-id: here, and no secrets.AWS_ACCESS_KEY_ID\n      run: echo '# uses: actions/checkout@v5'\n";
        assert_eq!(rules(text), []);
    }
}
