//! `${VAR}`, `${VAR:-default}` and `$${` in config strings.

use pipeline_core::config::expand;
use std::path::Path;

#[test]
fn variables_expand_from_the_lookup_and_nothing_else() {
    let lookup = |name: &str| match name {
        "REGION" => Some("eu-west-1".to_string()),
        "EMPTY" => Some(String::new()),
        "SNEAKY" => Some("${REGION}".to_string()),
        _ => None,
    };
    let cases = [
        ("${REGION}", "eu-west-1"),
        ("${REGION:-us-east-1}", "eu-west-1"),
        ("${UNSET:-us-east-1}", "us-east-1"),
        ("${UNSET:-}", ""),
        ("${EMPTY:-not used}", ""),
        ("${UNSET:-http://127.0.0.1:8000}", "http://127.0.0.1:8000"),
        ("${UNSET:-a:-b}", "a:-b"),
        ("arn:${REGION}:${UNSET:-x}", "arn:eu-west-1:x"),
        ("$${REGION}", "${REGION}"),
        // Scanned left to right: a lone `$`, then the `$${` escape.
        ("$$${REGION}", "$${REGION}"),
        ("costs $5 or $", "costs $5 or $"),
        ("no variables", "no variables"),
        // A value is not expanded again.
        ("${SNEAKY}", "${REGION}"),
    ];
    for (text, expected) in cases {
        let expanded = expand(Path::new("tugboat.toml"), text, "key", &lookup);
        assert_eq!(expanded.as_deref(), Ok(expected), "expand({text:?})");
    }
}

#[test]
fn a_variable_without_a_value_or_default_is_an_error_naming_it() {
    let cases = [
        ("${UNSET}", "UNSET, which is not set"),
        (
            "prefix-${ALSO_UNSET}-suffix",
            "ALSO_UNSET, which is not set",
        ),
        ("${REGION", "unclosed `${`"),
        ("${}", "bad variable name"),
        ("${9LIVES}", "bad variable name"),
        ("${A-B}", "bad variable name"),
    ];
    for (text, problem) in cases {
        let err = expand(
            Path::new("tugboat.toml"),
            text,
            "environments.staging.cluster",
            &|_| None,
        )
        .expect_err(text);
        let message = err.to_string();
        assert_eq!(err.key(), "environments.staging.cluster", "{text:?}");
        assert!(
            message.starts_with("tugboat.toml: `environments.staging.cluster`: "),
            "{message}"
        );
        assert!(message.contains(problem), "{text:?}: {message}");
    }
}

#[test]
fn a_whole_variable_fills_number_and_boolean_fields_and_empty_urls_mean_none() {
    let path = crate::support::cv_matcher_config();
    let text = std::fs::read_to_string(&path).expect("read the example");
    let lookup = |name: &str| match name {
        "BAKE_SECONDS" => Some("7".to_string()),
        "APP_URL" => Some(String::new()),
        _ => None,
    };
    let config = pipeline_core::Config::parse(&path, &text, &lookup).expect("the example parses");
    let production = &config.environments["production"];
    assert_eq!(production.verify.bake_seconds, 7);
    assert_eq!(
        production.verify.url, None,
        "an empty APP_URL means no HTTP check"
    );

    let defaults = pipeline_core::Config::parse(&path, &text, &|_| None).expect("parses");
    assert_eq!(defaults.environments["production"].verify.bake_seconds, 300);

    let wrong = |name: &str| (name == "BAKE_SECONDS").then(|| "soon".to_string());
    let error = pipeline_core::Config::parse(&path, &text, &wrong).expect_err("not a number");
    let message = error.to_string();
    assert!(
        message.contains("environments.production.verify.bake_seconds"),
        "{message}"
    );
    // Where the value came from, never the value: a variable may hold a secret.
    assert!(message.contains("${BAKE_SECONDS"), "{message}");
    assert!(!message.contains("soon"), "{message}");
}
