//! Which environment a git ref deploys to, and the glob patterns behind it.

use crate::support::cv_matcher;
use pipeline_core::config::glob_match;

#[test]
fn glob_match_follows_star_only_rules() {
    let cases = [
        ("v*", "v1.2.0", true),
        ("v*", "v", true),
        ("v*", "release-v1", false),
        ("develop", "develop", true),
        ("develop", "develop2", false),
        ("develop", "Develop", false),
        ("release/*", "release/2026-11", true),
        ("release/*", "release", false),
        ("*-hotfix", "payments-hotfix", true),
        ("*-hotfix", "payments-hotfix-2", false),
        ("v*.*.*", "v1.2.0", true),
        ("v*.*.*", "v1.2", false),
        ("*", "", true),
        ("", "", true),
        ("", "x", false),
        ("a*b*c", "abc", true),
        ("a*b*c", "a-c-b", false),
        ("v?", "v1", false),
        ("fé*", "fé-ñ", true),
    ];
    for (pattern, text, expected) in cases {
        assert_eq!(
            glob_match(pattern, text),
            expected,
            "glob_match({pattern:?}, {text:?})"
        );
    }
}

#[test]
fn refs_deploy_to_the_environment_whose_rules_match() {
    let project = cv_matcher();
    let cases = [
        ("refs/heads/develop", Some("staging")),
        ("refs/tags/v1.2.0", Some("production")),
        ("refs/heads/feature-x", None),
        ("refs/heads/main", None),
        // A branch named like a release tag is still a branch.
        ("refs/heads/v1.2.0", None),
        // A tag named like the staging branch is still a tag.
        ("refs/tags/develop", None),
        ("refs/tags/release-1", None),
        // Bare names (a Lambda event, a local run) may be either.
        ("develop", Some("staging")),
        ("v2.0.0", Some("production")),
        ("refs/pull/12/merge", None),
    ];
    for (git_ref, expected) in cases {
        assert_eq!(
            project.config.environment_for_ref(git_ref),
            expected,
            "environment_for_ref({git_ref:?})"
        );
    }
}
