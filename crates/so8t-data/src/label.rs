//! The four safety classes of spec §4: ALLOW = 0, ESCALATION = 1, DENY = 2, REFUSE = 3.

use serde::{Deserialize, Serialize};

/// A four-class safety label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Label {
    /// Safe: answer.
    Allow = 0,
    /// Needs an expert or a human: say who to ask.
    Escalation = 1,
    /// Decline with a reason and a safe alternative.
    Deny = 2,
    /// Clearly dangerous: decline briefly.
    Refuse = 3,
}

impl Label {
    /// All labels in id order.
    pub const ALL: [Label; 4] = [Label::Allow, Label::Escalation, Label::Deny, Label::Refuse];

    /// The canonical name (`ALLOW`, `ESCALATION`, `DENY`, `REFUSE`).
    pub fn name(self) -> &'static str {
        match self {
            Label::Allow => "ALLOW",
            Label::Escalation => "ESCALATION",
            Label::Deny => "DENY",
            Label::Refuse => "REFUSE",
        }
    }

    /// The class id 0–3.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// Parses a name in any case (`ESCALATE` = ESCALATION) or an id `0`–`3`.
    pub fn parse(s: &str) -> Option<Label> {
        let t = s.trim();
        match t.to_ascii_uppercase().as_str() {
            "ALLOW" | "0" => Some(Label::Allow),
            "ESCALATION" | "ESCALATE" | "1" => Some(Label::Escalation),
            "DENY" | "2" => Some(Label::Deny),
            "REFUSE" | "3" => Some(Label::Refuse),
            _ => None,
        }
    }

    /// Parses a JSON value: a name string or an integer id.
    pub fn from_json(v: &serde_json::Value) -> Option<Label> {
        match v {
            serde_json::Value::String(s) => Label::parse(s),
            serde_json::Value::Number(n) => {
                n.as_u64().and_then(|i| Label::ALL.get(i as usize).copied())
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_spelling_parses() {
        for (s, l) in [
            ("ALLOW", Label::Allow),
            ("allow", Label::Allow),
            (" Allow ", Label::Allow),
            ("ESCALATION", Label::Escalation),
            ("escalate", Label::Escalation),
            ("Escalate", Label::Escalation),
            ("deny", Label::Deny),
            ("REFUSE", Label::Refuse),
            ("0", Label::Allow),
            ("3", Label::Refuse),
        ] {
            assert_eq!(Label::parse(s), Some(l), "{s:?}");
        }
        for bad in ["", "4", "-1", "ALLOWED", "block"] {
            assert_eq!(Label::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Label::from_json(&json!(1)), Some(Label::Escalation));
        assert_eq!(Label::from_json(&json!(4)), None);
        assert_eq!(Label::from_json(&json!("DENY")), Some(Label::Deny));
        assert_eq!(Label::from_json(&json!(null)), None);
        assert_eq!(
            serde_json::to_string(&Label::Escalation).unwrap(),
            "\"ESCALATION\""
        );
    }
}
