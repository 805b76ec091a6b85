//! Composite alarm rules (spec metrics-and-alarms.md §5.2): `ALARM(name)`, `OK(name)`,
//! `INSUFFICIENT_DATA(name)`, `TRUE`, `FALSE`, `AND`, `OR`, `NOT` and parentheses; names bare,
//! in double quotes, or as alarm ARNs.

use crate::alarms::AlarmState;

/// A parsed rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// `TRUE` or `FALSE`.
    Constant(bool),
    /// `ALARM(name)`, `OK(name)`, `INSUFFICIENT_DATA(name)`: the named alarm is in that state.
    State(AlarmState, String),
    /// `NOT rule`.
    Not(Box<Rule>),
    /// `a AND b AND ...`.
    And(Vec<Rule>),
    /// `a OR b OR ...`.
    Or(Vec<Rule>),
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn skip_space(&mut self) {
        while self.text[self.at..].starts_with(char::is_whitespace) {
            self.at += self.text[self.at..]
                .chars()
                .next()
                .map_or(1, char::len_utf8);
        }
    }

    fn word(&mut self) -> Option<&'a str> {
        self.skip_space();
        let rest = &self.text[self.at..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphabetic() || c == '_'))
            .unwrap_or(rest.len());
        (len > 0).then(|| {
            self.at += len;
            &rest[..len]
        })
    }

    fn peek_word(&mut self) -> Option<&'a str> {
        let at = self.at;
        let word = self.word();
        self.at = at;
        word
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        self.skip_space();
        if self.text[self.at..].starts_with(c) {
            self.at += c.len_utf8();
            Ok(())
        } else {
            Err(format!("expected '{c}' at position {}", self.at))
        }
    }

    /// or := and (OR and)*
    fn or(&mut self) -> Result<Rule, String> {
        let mut terms = vec![self.and()?];
        while self.peek_word() == Some("OR") {
            self.word();
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Rule::Or(terms)
        })
    }

    /// and := not (AND not)*
    fn and(&mut self) -> Result<Rule, String> {
        let mut terms = vec![self.not()?];
        while self.peek_word() == Some("AND") {
            self.word();
            terms.push(self.not()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Rule::And(terms)
        })
    }

    /// not := NOT not | atom
    fn not(&mut self) -> Result<Rule, String> {
        if self.peek_word() == Some("NOT") {
            self.word();
            return Ok(Rule::Not(Box::new(self.not()?)));
        }
        self.atom()
    }

    /// atom := TRUE | FALSE | STATE '(' name ')' | '(' or ')'
    fn atom(&mut self) -> Result<Rule, String> {
        self.skip_space();
        if self.text[self.at..].starts_with('(') {
            self.expect('(')?;
            let inner = self.or()?;
            self.expect(')')?;
            return Ok(inner);
        }
        let word = self
            .word()
            .ok_or_else(|| format!("expected a rule at position {}", self.at))?;
        let state = match word {
            "TRUE" => return Ok(Rule::Constant(true)),
            "FALSE" => return Ok(Rule::Constant(false)),
            "ALARM" => AlarmState::Alarm,
            "OK" => AlarmState::Ok,
            "INSUFFICIENT_DATA" => AlarmState::InsufficientData,
            other => {
                return Err(format!(
                    "'{other}' is not ALARM, OK, INSUFFICIENT_DATA, TRUE or FALSE"
                ));
            }
        };
        self.expect('(')?;
        self.skip_space();
        let rest = &self.text[self.at..];
        let name = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or("an alarm name's quote is not closed")?;
            self.at += end + 2;
            quoted[..end].to_owned()
        } else {
            let end = rest.find(')').ok_or("a '(' is not closed")?;
            self.at += end;
            rest[..end].trim().to_owned()
        };
        self.expect(')')?;
        // An ARN names the alarm after its last `alarm:`.
        let name = name
            .rsplit_once(":alarm:")
            .map_or(name.clone(), |(_, n)| n.to_owned());
        if name.is_empty() {
            return Err("an alarm name is empty".into());
        }
        Ok(Rule::State(state, name))
    }
}

impl Rule {
    /// Parses a rule (at most 10,240 characters).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > 10_240 {
            return Err("the rule must be 1 to 10240 characters".into());
        }
        let mut parser = Parser { text, at: 0 };
        let rule = parser.or()?;
        parser.skip_space();
        if parser.at != text.len() {
            return Err(format!("unexpected text at position {}", parser.at));
        }
        Ok(rule)
    }

    /// The alarms the rule names.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Self::Constant(_) => vec![],
            Self::State(_, name) => vec![name.as_str()],
            Self::Not(inner) => inner.names(),
            Self::And(terms) | Self::Or(terms) => terms.iter().flat_map(Self::names).collect(),
        }
    }

    /// Whether the rule holds, given each alarm's state (`None` for an unknown alarm, which
    /// matches no state).
    pub fn holds(&self, state_of: &impl Fn(&str) -> Option<AlarmState>) -> bool {
        match self {
            Self::Constant(b) => *b,
            Self::State(state, name) => state_of(name) == Some(*state),
            Self::Not(inner) => !inner.holds(state_of),
            Self::And(terms) => terms.iter().all(|t| t.holds(state_of)),
            Self::Or(terms) => terms.iter().any(|t| t.holds(state_of)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_evaluate() {
        let rule = Rule::parse(
            r#"ALARM(errors) AND (ALARM("p99 high") OR NOT OK(arn:aws:cloudwatch:us-east-1:000000000000:alarm:throttles))"#,
        )
        .unwrap();
        assert_eq!(rule.names(), vec!["errors", "p99 high", "throttles"]);
        let states = |alarm: &str, p99: &str, throttles: &str| {
            let (a, b, c) = (
                AlarmState::parse(alarm),
                AlarmState::parse(p99),
                AlarmState::parse(throttles),
            );
            move |name: &str| match name {
                "errors" => a,
                "p99 high" => b,
                "throttles" => c,
                _ => None,
            }
        };
        assert!(rule.holds(&states("ALARM", "ALARM", "OK")));
        assert!(rule.holds(&states("ALARM", "OK", "ALARM")));
        assert!(!rule.holds(&states("ALARM", "OK", "OK")));
        assert!(!rule.holds(&states("OK", "ALARM", "ALARM")));
        assert!(Rule::parse("TRUE").unwrap().holds(&|_| None));
        assert!(Rule::parse("NOT FALSE").unwrap().holds(&|_| None));
        assert!(!Rule::parse("ALARM(gone)").unwrap().holds(&|_| None));
    }

    #[test]
    fn bad_rules_are_named() {
        for (rule, says) in [
            ("", "1 to 10240"),
            ("ALARM(a", "not closed"),
            ("ALARMS(a)", "is not ALARM"),
            ("ALARM(a) XOR ALARM(b)", "unexpected text"),
            ("ALARM(\"a)", "quote is not closed"),
            ("ALARM()", "empty"),
        ] {
            let err = Rule::parse(rule).unwrap_err();
            assert!(err.contains(says), "{rule}: {err}");
        }
    }
}
