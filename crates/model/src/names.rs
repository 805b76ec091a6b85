//! Function names, qualifiers and the name-or-ARN forms the Lambda API accepts.

use std::fmt;

use crate::ValidationError;

/// A validated function name: 1 to 64 characters of `[a-zA-Z0-9-_]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionName(String);

impl FunctionName {
    /// Validates `s` as Lambda validates a bare function name.
    ///
    /// # Errors
    /// A [`ValidationError`] on `FunctionName` saying what is wrong.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.is_empty() || s.len() > 64 {
            return Err(ValidationError::new(
                "FunctionName",
                format!("function name '{s}' must be 1 to 64 characters long"),
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(ValidationError::new(
                "FunctionName",
                format!(
                    "function name '{s}' contains '{c}': only letters, digits, '-' and '_' are allowed"
                ),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which version of a function a request addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Qualifier {
    /// `$LATEST`: the newest deployed code and configuration.
    Latest,
    /// A numbered version.
    Version(u64),
    /// An alias name (aliases come with the deployments issue; unknown ones are 404s until then).
    Alias(String),
}

impl Qualifier {
    /// Parses `$LATEST`, a version number or an alias name.
    ///
    /// # Errors
    /// A [`ValidationError`] on `Qualifier` when the text fits none of these.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s == "$LATEST" {
            return Ok(Self::Latest);
        }
        if !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .map(Self::Version)
                .ok_or_else(|| {
                    ValidationError::new("Qualifier", format!("version '{s}' is out of range"))
                });
        }
        if s.is_empty()
            || s.len() > 128
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ValidationError::new(
                "Qualifier",
                format!(
                    "qualifier '{s}' must be $LATEST, a version number or an alias of 1 to 128 characters of [a-zA-Z0-9-_]"
                ),
            ));
        }
        Ok(Self::Alias(s.to_owned()))
    }
}

impl fmt::Display for Qualifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("$LATEST"),
            Self::Version(n) => write!(f, "{n}"),
            Self::Alias(a) => f.write_str(a),
        }
    }
}

/// A function as a request names it: a bare name, `name:qualifier`, a partial ARN
/// (`123456789012:function:name`) or a full ARN, each with an optional qualifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    /// The function's name.
    pub name: FunctionName,
    /// The qualifier carried in the name or ARN, if any.
    pub qualifier: Option<Qualifier>,
    /// The region named by a full ARN, if any.
    pub region: Option<String>,
}

impl FunctionRef {
    /// Parses any of the forms Lambda accepts for `FunctionName` (see invoke-api.md §2.1).
    ///
    /// # Errors
    /// A [`ValidationError`] on `FunctionName` when the text is none of them.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let invalid = || {
            ValidationError::new(
                "FunctionName",
                format!(
                    "1 validation error detected: Value '{s}' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{{2}}(-gov)?-[a-z]+-\\d{{1}}:)?(\\d{{12}}:)?(function:)?([a-zA-Z0-9-_\\.]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?"
                ),
            )
        };
        if s.is_empty() || s.len() > 256 {
            return Err(invalid());
        }
        let parts: Vec<&str> = s.split(':').collect();
        let (region, rest): (Option<String>, &[&str]) = if parts[0] == "arn" {
            // arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]
            if parts.len() < 7
                || parts.len() > 8
                || !parts[1].starts_with("aws")
                || parts[2] != "lambda"
                || parts[5] != "function"
            {
                return Err(invalid());
            }
            (Some(parts[3].to_owned()), &parts[6..])
        } else if parts.len() >= 3 && parts[1] == "function" {
            // <account>:function:<name>[:<qualifier>]
            if parts[0].len() != 12 || !parts[0].bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            (None, &parts[2..])
        } else {
            (None, &parts[..])
        };
        let (name, qualifier) = match rest {
            [name] => (*name, None),
            [name, q] => (*name, Some(Qualifier::parse(q).map_err(|_| invalid())?)),
            _ => return Err(invalid()),
        };
        Ok(Self {
            name: FunctionName::parse(name).map_err(
                |e| {
                    if name.len() > 64 { e } else { invalid() }
                },
            )?,
            qualifier,
            region,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_follow_lambda_rules() {
        assert!(FunctionName::parse("my-func_1").is_ok());
        assert!(FunctionName::parse("").is_err());
        assert!(FunctionName::parse(&"a".repeat(64)).is_ok());
        assert!(FunctionName::parse(&"a".repeat(65)).is_err());
        let err = FunctionName::parse("bad name").unwrap_err();
        assert!(err.message.contains("' '"), "{err}");
        assert!(FunctionName::parse("a.b").is_err());
    }

    #[test]
    fn qualifiers_parse() {
        assert_eq!(Qualifier::parse("$LATEST").unwrap(), Qualifier::Latest);
        assert_eq!(Qualifier::parse("7").unwrap(), Qualifier::Version(7));
        assert!(Qualifier::parse("0").is_err());
        assert_eq!(
            Qualifier::parse("live").unwrap(),
            Qualifier::Alias("live".into())
        );
        assert!(Qualifier::parse("$OTHER").is_err());
        assert!(Qualifier::parse("").is_err());
    }

    #[test]
    fn function_refs_accept_names_and_arns() {
        let r = FunctionRef::parse("f").unwrap();
        assert_eq!((r.name.as_str(), r.qualifier), ("f", None));
        let r = FunctionRef::parse("f:$LATEST").unwrap();
        assert_eq!(r.qualifier, Some(Qualifier::Latest));
        let r = FunctionRef::parse("123456789012:function:f:3").unwrap();
        assert_eq!(
            (r.name.as_str(), r.qualifier),
            ("f", Some(Qualifier::Version(3)))
        );
        let r = FunctionRef::parse("arn:aws:lambda:us-east-1:000000000000:function:f").unwrap();
        assert_eq!(r.region.as_deref(), Some("us-east-1"));
        assert!(FunctionRef::parse("arn:aws:s3:::bucket").is_err());
        assert!(FunctionRef::parse("a:b:c:d").is_err());
        assert!(FunctionRef::parse("bad/name").is_err());
    }
}
