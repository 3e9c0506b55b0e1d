//! `${NAME}` in the file's string values, replaced from the environment: the step between the
//! YAML text and the raw structs, so that any value can come from the environment.

/// Replaces `${NAME}` in every string value; an unset variable is an error naming the key.
pub(super) fn expand_env(
    value: &mut serde_yaml::Value,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), (String, String)> {
    match value {
        serde_yaml::Value::String(s) => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let end = after
                    .find('}')
                    .ok_or((key.to_string(), "unclosed ${ in value".to_string()))?;
                let name = &after[..end];
                let v = lookup(name).ok_or((
                    key.to_string(),
                    format!("environment variable {name} is not set"),
                ))?;
                out.push_str(&v);
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        serde_yaml::Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_env(item, &format!("{key}[{i}]"), lookup)?;
            }
        }
        serde_yaml::Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let name = k.as_str().unwrap_or("?");
                let child = if key.is_empty() {
                    name.to_string()
                } else {
                    format!("{key}.{name}")
                };
                expand_env(v, &child, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion_names_the_key() {
        let mut v: serde_yaml::Value =
            serde_yaml::from_str("sessions:\n  redis_url: redis://${HOST}:${PORT}/0\n").unwrap();
        let lookup = |n: &str| (n == "HOST").then(|| "db".to_string());
        let e = expand_env(&mut v, "", &lookup).unwrap_err();
        assert_eq!(e.0, "sessions.redis_url");
        assert!(e.1.contains("PORT"));
        let lookup = |n: &str| Some(n.to_lowercase());
        expand_env(&mut v, "", &lookup).unwrap();
        assert_eq!(
            v["sessions"]["redis_url"].as_str(),
            Some("redis://host:port/0")
        );
    }
}
