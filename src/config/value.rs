//! Values of the configuration file with a syntax of their own: durations and sizes (one
//! syntax everywhere, through `humantime` and `parse-size`), secrets, and `${VAR}` references.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// A duration written as `90s`, `1h30m`, `7d` (humantime's syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dur(pub std::time::Duration);

impl std::str::FromStr for Dur {
    type Err = Error;
    fn from_str(s: &str) -> Result<Dur> {
        parse_duration(s).map(Dur)
    }
}

/// Parse a duration: `90s`, `1h30m`, `7d`, `500ms`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let t = s.trim();
    // A bare number is seconds.
    if let Ok(n) = t.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(n));
    }
    humantime::parse_duration(t).map_err(|e| {
        Error::invalid(format!(
            "{s:?} is not a duration ({e}; e.g. 90s, 1h30m, 7d)"
        ))
    })
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return write!(f, "0s");
        }
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Dur, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A size in bytes written as `512M`, `2G`, `64KiB` (binary units, as everywhere in cairn),
/// or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Size(pub u64);

/// Parse a size: a number with an optional unit K, M, G, T (KiB, MB, ... alike: all binary).
pub fn parse_size(s: &str) -> Result<u64> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(s.trim())
        .map_err(|e| Error::invalid(format!("{s:?} is not a size ({e}; e.g. 512M, 2G)")))
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Size, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// A secret (a password, a key): never printed. In the file it is best a `${VAR}` reference
/// (or the key is replaced by a `-file`/`-command` one); a literal makes the file itself a
/// secret, which is then refused unless only its owner can read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// Whether the file holds the secret itself, rather than only `${VAR}` references.
    pub fn is_literal(&self) -> bool {
        !only_references(&self.0)
    }

    /// The secret, with `${VAR}` references replaced from the environment.
    pub fn reveal(&self, key: &str) -> Result<zeroize::Zeroizing<String>> {
        expand_env(&self.0, key).map(zeroize::Zeroizing::new)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Secret {
    /// A reference prints as itself (it names a variable, not the secret); a literal as
    /// `<redacted>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_literal() {
            write!(f, "<redacted>")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Secret, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// Whether `s` is nothing but `${VAR}` references (and at least one).
fn only_references(s: &str) -> bool {
    let mut rest = s.trim();
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let Some(r) = rest.strip_prefix("${") else {
            return false;
        };
        let Some(end) = r.find('}') else {
            return false;
        };
        if !valid_var(&r[..end]) {
            return false;
        }
        rest = &r[end + 1..];
    }
    true
}

fn valid_var(name: &str) -> bool {
    let mut c = name.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Replace every `${VAR}` in `s` with the variable's value; `$${` is a literal `${`. An unset
/// variable is an error naming it and `key`, the setting it was found in (never the value).
pub fn expand_env(s: &str, key: &str) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix("${") {
            out.push_str("${");
            rest = a;
            continue;
        }
        let Some(r) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let end = r
            .find('}')
            .ok_or_else(|| Error::invalid(format!("{key}: unclosed ${{ in the value")))?;
        let name = &r[..end];
        if !valid_var(name) {
            return Err(Error::invalid(format!(
                "{key}: ${{{name}}} is not a variable name"
            )));
        }
        match std::env::var(name) {
            Ok(v) => out.push_str(&v),
            Err(_) => {
                return Err(Error::invalid(format!(
                    "{key}: the environment variable {name} is not set"
                )));
            }
        }
        rest = &r[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        let secs = |s: &str| parse_duration(s).unwrap().as_secs();
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("7d"), 7 * 86400);
        assert_eq!(secs("0"), 0);
        assert_eq!(secs("30"), 30);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(
            Dur(std::time::Duration::from_secs(5400)).to_string(),
            "1h 30m"
        );
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12X").is_err());
    }

    #[test]
    fn references_and_literals() {
        assert!(!Secret::new("${DB_PASSWORD}").is_literal());
        assert!(!Secret::new("${A}${B_2}").is_literal());
        assert!(Secret::new("hunter2").is_literal());
        assert!(Secret::new("pre${A}").is_literal());
        assert!(Secret::new("${1A}").is_literal());
        assert!(Secret::new("").is_literal());
        assert_eq!(Secret::new("hunter2").to_string(), "<redacted>");
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "<redacted>");
        assert_eq!(Secret::new("${X}").to_string(), "${X}");
    }

    #[test]
    fn expansion() {
        // SAFETY: test-only variables with names no other test uses.
        unsafe { std::env::set_var("CAIRN_CONFIG_TEST_HOME", "/srv/app") };
        let e = |s: &str| expand_env(s, "k");
        assert_eq!(
            e("${CAIRN_CONFIG_TEST_HOME}/storage").unwrap(),
            "/srv/app/storage"
        );
        assert_eq!(e("$${HOME} and $5").unwrap(), "${HOME} and $5");
        let err = e("${CAIRN_CONFIG_TEST_UNSET_VAR}").unwrap_err().to_string();
        assert!(
            err.contains("CAIRN_CONFIG_TEST_UNSET_VAR is not set"),
            "{err}"
        );
        assert!(err.starts_with("k: "), "{err}");
        assert!(e("${oops").is_err());
        assert!(e("${a-b}").is_err());
    }
}
