//! What every engine crate (`idem-postgres`, `idem-mysql`, `idem-redis`)
//! shares when it opens a store URL: the error it reports, and the query
//! parameters idem reads itself (TLS files and modes) and removes before the
//! engine's client library parses the URL.

/// Why a backend could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The store URL is not one of the engines this build includes.
    #[error("unsupported store URL '{0}': expected {SCHEMES}")]
    UnsupportedUrl(String),
    /// The engine refused or could not be reached.
    #[error("{engine}: {message}")]
    Engine {
        /// Which engine.
        engine: &'static str,
        /// What it said.
        message: String,
    },
}

const SCHEMES: &str =
    "postgres://, mysql://, mariadb://, redis://, rediss:// or redis-cluster:// (each when its engine's feature is on)";

/// `value` of the URL setting `name` as a whole number in 1..=`max`; the
/// error names the setting and its bounds.
pub fn whole_number(name: &str, value: &str, max: u64) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{name}={value}: expected a whole number from 1 to {max}")),
    }
}

/// Removes `name=value` from the query of `url`: (the URL without it, the
/// value). A `#fragment` is kept.
pub fn take_param(url: &str, name: &str) -> (String, Option<String>) {
    let (path, query, fragment) = split(url);
    let Some(query) = query else { return (url.to_string(), None) };
    let mut value = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some((k, v)) if k == name => {
                value = Some(v.to_string());
                false
            }
            _ => true,
        })
        .collect();
    let mut out = path.to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    (out, value)
}

/// The names of the query parameters of `url`, in order (a `#fragment` is
/// not part of the query): what is left to refuse once every known
/// setting was taken out with [`take_param`].
pub fn param_names(url: &str) -> impl Iterator<Item = &str> {
    split(url)
        .1
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map_or(p, |(k, _)| k))
}

/// `url` as (everything before the query, the query, the fragment).
fn split(url: &str) -> (&str, Option<&str>, Option<&str>) {
    let (head, fragment) = match url.split_once('#') {
        Some((h, f)) => (h, Some(f)),
        None => (url, None),
    };
    match head.split_once('?') {
        Some((path, query)) => (path, Some(query), fragment),
        None => (head, None, fragment),
    }
}

#[cfg(test)]
mod tests {
    use super::{param_names, take_param};

    #[test]
    fn names_the_parameters_of_the_query_only() {
        let names: Vec<&str> = param_names("rediss://h:1/?a=1&flag&&b=2#insecure").collect();
        assert_eq!(names, ["a", "flag", "b"]);
        assert_eq!(param_names("redis://h:1/#x=1").count(), 0);
    }

    #[test]
    fn takes_one_parameter_and_keeps_the_rest() {
        let (u, v) = take_param("rediss://h:1/?a=1&tls_ca=/x.pem&b=2#insecure", "tls_ca");
        assert_eq!((u.as_str(), v.as_deref()), ("rediss://h:1/?a=1&b=2#insecure", Some("/x.pem")));
        let (u, v) = take_param("postgres://h/db?sslmode=require", "sslmode");
        assert_eq!((u.as_str(), v.as_deref()), ("postgres://h/db", Some("require")));
        let (u, v) = take_param("mysql://h/db", "ssl-mode");
        assert_eq!((u.as_str(), v), ("mysql://h/db", None));
    }
}
