//! A deliberately small `{{ name }}` template language for playbook strings.
//!
//! Playbooks borrow Ansible's look (`{{ run_dir }}`, `{{ inventory_hostname }}`,
//! `{{ var | default('x') }}`) but not Jinja: no expressions, no loops, no code.
//! Everything a template can produce is a plain substitution, so a playbook can
//! be checked for unknown variables before any host is touched.

use std::collections::BTreeMap;

use serde_json::Value;

/// Variables visible to a template, looked up by name.
#[derive(Debug, Default, Clone)]
pub struct Vars {
    map: BTreeMap<String, String>,
}

impl Vars {
    pub fn new() -> Vars {
        Vars::default()
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.map.insert(name.to_string(), value.into());
    }

    /// Adds inventory variables; scalars become their text, lists and maps
    /// their JSON form.
    pub fn extend_json(&mut self, vars: &BTreeMap<String, Value>) {
        for (k, v) in vars {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            self.map.insert(k.clone(), text);
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }
}

/// Expands every `{{ ... }}` in `template`.
///
/// Errors name the missing variable or the malformed expression; the caller
/// adds which playbook field it came from.
pub fn render(template: &str, vars: &Vars) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed '{{{{' in {template:?}"))?;
        out.push_str(&eval(after[..end].trim(), vars)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn eval(expr: &str, vars: &Vars) -> Result<String, String> {
    let mut parts = expr.splitn(2, '|');
    let name = parts.next().unwrap_or_default().trim();
    if !is_identifier(name) {
        return Err(format!(
            "'{{{{ {expr} }}}}' is not a variable name (only {{{{ name }}}} and {{{{ name | default('x') }}}} are supported)"
        ));
    }
    let default = match parts.next() {
        None => None,
        Some(filter) => Some(parse_default(filter.trim()).ok_or_else(|| {
            format!("unsupported filter in '{{{{ {expr} }}}}': only default('text') is supported")
        })?),
    };
    match (vars.get(name), default) {
        (Some(v), _) => Ok(v.to_string()),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(format!("undefined variable '{name}'")),
    }
}

fn parse_default(filter: &str) -> Option<String> {
    let inner = filter.strip_prefix("default")?.trim();
    let inner = inner.strip_prefix('(')?.strip_suffix(')')?.trim();
    let quote = inner.chars().next()?;
    if quote != '\'' && quote != '"' {
        return None;
    }
    let body = inner.strip_prefix(quote)?.strip_suffix(quote)?;
    Some(body.to_string())
}

/// A name, or dotted names (`inputs.rules`: the playbook's pinned inputs are set under
/// `inputs.`); each part starts with a letter or `_`.
fn is_identifier(s: &str) -> bool {
    s.split('.').all(is_name)
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let mut v = Vars::new();
        v.set("run_dir", "/tmp/x");
        v.set("inventory_hostname", "web1");
        v
    }

    #[test]
    fn substitutes_variables_and_defaults() {
        let v = vars();
        assert_eq!(
            render("{{ run_dir }}/{{inventory_hostname}}.txt", &v).as_deref(),
            Ok("/tmp/x/web1.txt")
        );
        assert_eq!(
            render("{{ lang | default('en') }}", &v).as_deref(),
            Ok("en")
        );
        assert_eq!(
            render("{{ run_dir | default(\"z\") }}", &v).as_deref(),
            Ok("/tmp/x")
        );
        assert_eq!(render("no braces", &v).as_deref(), Ok("no braces"));
    }

    #[test]
    fn rejects_unknown_and_malformed() {
        let v = vars();
        assert!(render("{{ nope }}", &v)
            .unwrap_err()
            .contains("undefined variable 'nope'"));
        assert!(render("{{ run_dir", &v).unwrap_err().contains("unclosed"));
        assert!(render("{{ a + b }}", &v)
            .unwrap_err()
            .contains("not a variable name"));
        assert!(render("{{ run_dir | upper }}", &v)
            .unwrap_err()
            .contains("unsupported filter"));
        assert!(render("{{ inputs..rules }}", &v)
            .unwrap_err()
            .contains("not a variable name"));
    }

    #[test]
    fn dotted_names_are_looked_up_whole() {
        let mut v = vars();
        v.set("inputs.rules", "/tmp/x/r.yar");
        assert_eq!(
            render("-r {{ inputs.rules }}", &v).unwrap(),
            "-r /tmp/x/r.yar"
        );
        assert!(render("{{ inputs.other }}", &v)
            .unwrap_err()
            .contains("undefined variable 'inputs.other'"));
    }

    #[test]
    fn json_vars_become_text() {
        let mut v = Vars::new();
        let mut m = BTreeMap::new();
        m.insert("n".to_string(), Value::from(5));
        m.insert("s".to_string(), Value::from("x y"));
        v.extend_json(&m);
        assert_eq!(render("{{n}}-{{s}}", &v).as_deref(), Ok("5-x y"));
    }
}
