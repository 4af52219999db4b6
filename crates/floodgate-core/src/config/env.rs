//! `${VAR}` substitution in a config file's text, before it is parsed.
//!
//! Substitution happens on the text so that every later error still points at
//! the right line: a value never contains a raw newline (it is escaped), so line
//! numbers do not move. Inside a basic string (`"…"`) the value is escaped for
//! TOML; inside a literal string (`'…'`) it must not contain `'`. Comments are
//! left alone, so `# set ${OPENAI_API_KEY}` is not an error.
//!
//! Forms: `${VAR}` (an error when unset), `${VAR:-default}` (default when unset
//! or empty), `$${` for a literal `${`.

use std::collections::HashMap;

/// A reference that could not be substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubstError {
    /// 1-based line of the reference.
    pub line: usize,
    pub message: String,
}

/// Where `${VAR}` values come from. The process environment in `main`, a map in tests.
pub type Env = HashMap<String, String>;

#[derive(Clone, Copy, PartialEq)]
enum Quote {
    None,
    Basic,
    Literal,
}

/// Replaces every `${…}` outside comments. Collects all errors.
pub fn substitute(text: &str, env: &Env) -> Result<String, Vec<SubstError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    // Multi-line strings span lines, so quote state carries over.
    let mut multiline: Option<Quote> = None;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        substitute_line(line, index + 1, env, &mut multiline, &mut out, &mut errors);
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

fn substitute_line(
    line: &str,
    line_no: usize,
    env: &Env,
    multiline: &mut Option<Quote>,
    out: &mut String,
    errors: &mut Vec<SubstError>,
) {
    let bytes = line.as_bytes();
    let mut quote = multiline.unwrap_or(Quote::None);
    let mut i = 0;
    while i < bytes.len() {
        let rest = &line[i..];
        match quote {
            Quote::None => {
                if rest.starts_with('#') {
                    out.push_str(rest);
                    return;
                }
                if rest.starts_with("\"\"\"") {
                    quote = Quote::Basic;
                    *multiline = Some(Quote::Basic);
                    out.push_str("\"\"\"");
                    i += 3;
                    continue;
                }
                if rest.starts_with("'''") {
                    quote = Quote::Literal;
                    *multiline = Some(Quote::Literal);
                    out.push_str("'''");
                    i += 3;
                    continue;
                }
                if rest.starts_with('"') {
                    quote = Quote::Basic;
                } else if rest.starts_with('\'') {
                    quote = Quote::Literal;
                }
            }
            Quote::Basic | Quote::Literal => {
                let closing = if quote == Quote::Basic { '"' } else { '\'' };
                if multiline.is_some() {
                    let delim = if quote == Quote::Basic { "\"\"\"" } else { "'''" };
                    if rest.starts_with(delim) {
                        quote = Quote::None;
                        *multiline = None;
                        out.push_str(delim);
                        i += 3;
                        continue;
                    }
                } else if rest.starts_with(closing) {
                    quote = Quote::None;
                    out.push(closing);
                    i += 1;
                    continue;
                }
                if quote == Quote::Basic && rest.starts_with('\\') && rest.len() >= 2 {
                    // An escape: copy it whole so `\"` does not end the string.
                    let next = rest[1..].chars().next().map_or(1, char::len_utf8);
                    out.push_str(&rest[..1 + next]);
                    i += 1 + next;
                    continue;
                }
                if rest.starts_with("$${") {
                    out.push_str("${");
                    i += 3;
                    continue;
                }
                if rest.starts_with("${") {
                    match rest.find('}') {
                        Some(end) => {
                            let reference = &rest[2..end];
                            match resolve(reference, env) {
                                Ok(value) => push_escaped(&value, quote, line_no, out, errors),
                                Err(message) => errors.push(SubstError { line: line_no, message }),
                            }
                            i += end + 1;
                            continue;
                        }
                        None => errors.push(SubstError {
                            line: line_no,
                            message: "`${` without a closing `}`; write `${VAR}`, or `$${` for a literal `${`"
                                .to_string(),
                        }),
                    }
                }
            }
        }
        let ch_len = rest.chars().next().map_or(1, char::len_utf8);
        out.push_str(&rest[..ch_len]);
        i += ch_len;
    }
}

fn resolve(reference: &str, env: &Env) -> Result<String, String> {
    let (name, default) = match reference.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (reference, None),
    };
    let valid_name = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !valid_name {
        return Err(format!(
            "`${{{reference}}}` is not a valid reference; write `${{NAME}}` or `${{NAME:-default}}` \
             with NAME made of letters, digits and `_`"
        ));
    }
    match (env.get(name), default) {
        (Some(value), Some(default)) if value.is_empty() => Ok(default.to_string()),
        (Some(value), _) => Ok(value.clone()),
        (None, Some(default)) => Ok(default.to_string()),
        (None, None) => Err(format!(
            "environment variable {name} is not set; set it, or write `${{{name}:-}}` to allow it to be empty"
        )),
    }
}

fn push_escaped(
    value: &str,
    quote: Quote,
    line_no: usize,
    out: &mut String,
    errors: &mut Vec<SubstError>,
) {
    match quote {
        Quote::Basic => {
            for c in value.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                    c => out.push(c),
                }
            }
        }
        Quote::Literal | Quote::None => {
            if value.contains(['\'', '\n', '\r']) {
                errors.push(SubstError {
                    line: line_no,
                    message: "a substituted value with `'` or a newline cannot go in a literal \
                              string; use a \"basic string\" instead"
                        .to_string(),
                });
            } else {
                out.push_str(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn substitutes_in_strings_and_escapes() {
        let text = "a = \"${X}\"\nb = '${Y}'\n";
        let out = substitute(text, &env(&[("X", "q\"uo\\te"), ("Y", "plain")])).unwrap();
        assert_eq!(out, "a = \"q\\\"uo\\\\te\"\nb = 'plain'\n");
        let parsed: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(parsed["a"].as_str(), Some("q\"uo\\te"));
    }

    #[test]
    fn comments_and_escaped_dollar_are_left_alone() {
        let text = "a = \"$${HOME}\" # uses ${NOT_SET}\n# ${ALSO_NOT_SET}\n";
        assert_eq!(
            substitute(text, &Env::new()).unwrap(),
            "a = \"${HOME}\" # uses ${NOT_SET}\n# ${ALSO_NOT_SET}\n"
        );
    }

    #[test]
    fn defaults_and_errors_name_the_line() {
        let text = "a = \"${A:-x}\"\nb = \"${MISSING}\"\nc = \"${E:-d}\"\nd = \"${1BAD}\"\n";
        let errors = substitute(text, &env(&[("E", "")])).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].line, 2);
        assert!(errors[0].message.contains("MISSING is not set"));
        assert_eq!(errors[1].line, 4);
        let ok = substitute("a = \"${A:-x}\"\nc = \"${E:-d}\"\n", &env(&[("E", "")])).unwrap();
        assert_eq!(ok, "a = \"x\"\nc = \"d\"\n");
    }

    #[test]
    fn newlines_in_values_keep_line_numbers() {
        let out = substitute("a = \"${V}\"\nb = 1\n", &env(&[("V", "l1\nl2")])).unwrap();
        assert_eq!(out.lines().count(), 2);
    }

    #[test]
    fn multiline_strings_are_strings() {
        let text = "a = \"\"\"\n${V}\n\"\"\"\n";
        let out = substitute(text, &env(&[("V", "x")])).unwrap();
        assert_eq!(out, "a = \"\"\"\nx\n\"\"\"\n");
    }
}
