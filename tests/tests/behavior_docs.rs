//! Every `# Behavior` bullet of the `Broker` trait names a conformance case,
//! and every conformance case is named by a bullet.

use std::collections::BTreeSet;

/// The source of the contract, as the compiler saw it.
const BROKER_RS: &str = include_str!("../../core/src/broker.rs");

/// The case names cited in `# Behavior` bullets: a backticked snake_case
/// identifier in parentheses, `(`case_name`)`, anywhere in a bullet, which
/// may wrap over several `///` lines. Other code in parentheses, such as
/// "(`None`)" or "(`a b`)", is prose, not a case.
fn cited_cases(source: &str) -> Vec<String> {
    let mut bullets: Vec<String> = Vec::new();
    let mut in_behavior = false;
    for line in source.lines() {
        let Some(doc) = line.trim_start().strip_prefix("///") else {
            in_behavior = false;
            continue;
        };
        let text = doc.trim();
        if text.starts_with('#') {
            in_behavior = text == "# Behavior";
            continue;
        }
        if !in_behavior {
            continue;
        }
        if let Some(first) = text.strip_prefix("- ") {
            bullets.push(first.to_owned());
        } else if !text.is_empty() {
            // A wrapped bullet line continues the last bullet.
            if let Some(last) = bullets.last_mut() {
                last.push(' ');
                last.push_str(text);
            }
        }
    }
    let mut cases = Vec::new();
    for bullet in &bullets {
        let mut cited = 0;
        let mut rest = bullet.as_str();
        while let Some(start) = rest.find("(`") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("`)") else { break };
            let name = &after[..end];
            if is_case_name(name) {
                cases.push(name.to_owned());
                cited += 1;
            }
            rest = &after[end + 2..];
        }
        assert!(cited > 0, "a `# Behavior` bullet cites no case: {bullet}");
    }
    cases
}

/// Whether `name` looks like a case: a lower-case snake_case identifier.
fn is_case_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[test]
fn every_behavior_bullet_has_a_case_and_every_case_a_bullet() {
    let cited = cited_cases(BROKER_RS);
    let cited_set: BTreeSet<&str> = cited.iter().map(String::as_str).collect();
    assert_eq!(
        cited.len(),
        cited_set.len(),
        "a case is cited by two bullets: {cited:?}"
    );

    let cases: BTreeSet<&str> = crewq_core::conformance::CASES.iter().copied().collect();
    assert_eq!(
        cases.len(),
        crewq_core::conformance::CASES.len(),
        "a case is listed twice in conformance_cases!"
    );
    let uncovered: Vec<_> = cited_set.difference(&cases).collect();
    let uncited: Vec<_> = cases.difference(&cited_set).collect();
    assert!(
        uncovered.is_empty(),
        "bullets without a conformance case: {uncovered:?}"
    );
    assert!(
        uncited.is_empty(),
        "conformance cases no bullet cites: {uncited:?}"
    );
    assert!(cases.len() >= 40, "only {} cases", cases.len());
}

#[test]
fn extraction_joins_wrapped_bullets() {
    let source = "
    /// Does it.
    ///
    /// # Behavior
    ///
    /// - One thing, said at length over
    ///   two lines (`first_case`).
    /// - Another, whose name wraps
    ///   (`second_case`); not `this` nor (`a b`) nor (`None`).
    ///
    /// # Errors
    ///
    /// - Not a behavior (`not_a_case`).
    fn f();
    /// # Behavior
    /// - Last (`third_case`).
    fn g();
    ";
    assert_eq!(
        cited_cases(source),
        ["first_case", "second_case", "third_case"]
    );
}
