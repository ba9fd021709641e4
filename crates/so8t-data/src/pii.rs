//! PII scrubbing for dataset text (Japanese and English).
//!
//! [`PiiScrubber`] finds e-mail addresses, phone numbers, credit-card numbers, IP addresses
//! and Japanese postal codes and replaces each with a typed placeholder (`[EMAIL]`, `[PHONE]`,
//! …). Detection is regex candidates + validation code (Luhn, octet ranges, digit counts,
//! boundary checks), because the `regex` crate has no look-around.
//!
//! Detectors run in a fixed priority order: existing placeholders (protected, never
//! re-scrubbed) → e-mail → credit card → IPv6 → IPv4 → phone (international, NANP, Japanese)
//! → Japanese postal code. A region claimed by one detector is never matched by a later one,
//! and a candidate that *touches* a claimed region (no character in between) is rejected too.
//! Passes repeat until one finds nothing, so `scrub(scrub(x)) == scrub(x)` with zero counts.
//!
//! Shared boundary rule for the digit-based kinds: the character before and after a match
//! must not be a word character (ASCII letter/digit, `_`, full-width digit/letter), and must
//! not be a "joiner" (`-`, `.`, `:`, `/`, `,` and full-width hyphens) that is itself next to a
//! digit — so `2024-11-23`, `1.2.3.4.5` or `1,234-5678` never yield a match from their middle.
//! Japanese kana/kanji are not word characters: `連絡先は090-1234-5678です` matches.
//!
//! Known, accepted limitations:
//! - a bare four-part dotted number whose parts are all ≤ 255 (`1.2.3.4`) is treated as an
//!   IPv4 address (three-part versions like `1.2.3` are kept);
//! - any `NNN-NNNN` shape (e.g. a part number `123-4567`) is treated as a postal code, and any
//!   NANP-shaped `NXX-NXX-XXXX` as a phone number;
//! - `No. 1234-5678` (4+4 digits, no leading 0) is kept: it is neither a Japanese phone
//!   (those start with 0 and have 10–11 digits) nor a postal code;
//! - Japanese landline numbers must be written with separators (`03-1234-5678`,
//!   `03 1234 5678`, `03(1234)5678`); an unseparated `0312345678` is kept, whereas unseparated
//!   mobile / free-dial numbers (`09012345678`, `0120123456`) are replaced;
//! - credit cards are ASCII digits only, either unseparated or in groups of 3–6 digits joined
//!   by one consistent separator (single space or hyphen);
//! - PII glued to other PII without any character in between (`a@b.jp090-1234-5678`) is only
//!   partly replaced (the later kind is kept), for idempotence.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use regex::Regex;
use serde::Serialize;

/// Kinds of PII, each replaced by a typed placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Ord, PartialOrd, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    /// An e-mail address (`[EMAIL]`).
    Email,
    /// A phone number, Japanese or international (`[PHONE]`).
    Phone,
    /// A Luhn-valid credit-card number (`[CREDIT_CARD]`).
    CreditCard,
    /// An IPv4 or IPv6 address (`[IP_ADDRESS]`).
    IpAddress,
    /// A Japanese postal code `NNN-NNNN` (`[POSTAL_CODE]`).
    PostalCodeJp,
}

impl PiiKind {
    /// All kinds, in declaration order.
    pub const ALL: [PiiKind; 5] = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::CreditCard,
        PiiKind::IpAddress,
        PiiKind::PostalCodeJp,
    ];

    /// The placeholder that replaces a match of this kind.
    pub fn placeholder(self) -> &'static str {
        match self {
            PiiKind::Email => "[EMAIL]",
            PiiKind::Phone => "[PHONE]",
            PiiKind::CreditCard => "[CREDIT_CARD]",
            PiiKind::IpAddress => "[IP_ADDRESS]",
            PiiKind::PostalCodeJp => "[POSTAL_CODE]",
        }
    }

    /// The lowercase name used when counts are serialized (`email`, `phone`, `credit_card`,
    /// `ip_address`, `postal_code_jp`).
    pub fn name(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::CreditCard => "credit_card",
            PiiKind::IpAddress => "ip_address",
            PiiKind::PostalCodeJp => "postal_code_jp",
        }
    }
}

/// Per-kind replacement counts. Serializes as a map of lowercase kind names
/// ([`PiiKind::name`]) to counts; kinds with a zero count are not stored.
#[derive(Default, Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PiiCounts {
    counts: BTreeMap<PiiKind, u64>,
}

impl PiiCounts {
    /// Adds `n` replacements of `kind` (a zero `n` is a no-op).
    pub fn record(&mut self, kind: PiiKind, n: u64) {
        if n > 0 {
            *self.counts.entry(kind).or_insert(0) += n;
        }
    }

    /// Adds every count of `other` to `self`.
    pub fn add(&mut self, other: &PiiCounts) {
        for (&k, &n) in &other.counts {
            self.record(k, n);
        }
    }

    /// Total replacements over all kinds.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Replacements of one kind (0 when none).
    pub fn get(&self, kind: PiiKind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// True when nothing was replaced.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The non-zero counts, in kind order.
    pub fn iter(&self) -> impl Iterator<Item = (PiiKind, u64)> + '_ {
        self.counts.iter().map(|(&k, &n)| (k, n))
    }
}

/// A claimed region of the input: `kind == None` marks an existing placeholder.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    kind: Option<PiiKind>,
}

/// Which phone shape a phone regex describes (each has its own validation).
#[derive(Debug, Clone, Copy)]
enum PhoneShape {
    International,
    NanpParen,
    NanpDash,
    Japan,
}

/// Compiled once, reused for every record (Send + Sync).
#[derive(Debug, Clone)]
pub struct PiiScrubber {
    placeholder: Regex,
    email: Regex,
    card: Regex,
    ipv6: Regex,
    ipv4: Regex,
    phones: Vec<(PhoneShape, Regex)>,
    postal: Regex,
}

/// ASCII or full-width digit.
const D: &str = "[0-9０-９]";
/// Hyphen-like characters: ASCII hyphen-minus, Unicode hyphens/dashes, minus sign,
/// full-width hyphen-minus and the katakana prolonged sound mark (often typed for a hyphen).
const H: &str = "[\\-‐‑‒–—―−－ー]";
/// ASCII space or ideographic space.
const SP: &str = "[ \\x{3000}]";

impl Default for PiiScrubber {
    fn default() -> Self {
        Self::new()
    }
}

impl PiiScrubber {
    /// Compiles all detectors.
    pub fn new() -> Self {
        let re = |s: &str| Regex::new(s).expect("static PII regex compiles");
        // Placeholders already in the text: claimed first, never re-scrubbed.
        let placeholder = re(r"\[(?:EMAIL|PHONE|CREDIT_CARD|IP_ADDRESS|POSTAL_CODE)\]");
        // Email: dot-separated atoms of [A-Za-z0-9_%+-] @ dot-separated LDH labels (no
        // leading/trailing hyphen, ≤ 63 chars) ending in an alphabetic TLD of ≥ 2 letters.
        // The TLD is ASCII letters only, so Japanese text right after it (`…@x.jpまで`) stops it.
        let email = re(concat!(
            r"[A-Za-z0-9_%+\-]+(?:\.[A-Za-z0-9_%+\-]+)*@",
            r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?",
            r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}"
        ));
        // Credit card: 13–19 ASCII digits, either unseparated or in groups of 3–6 digits with
        // one consistent separator (single hyphen or single space). Validated: digit count
        // 13–19 and the Luhn checksum; boundary treats a space next to a digit as a joiner.
        let card = re(concat!(
            r"[0-9]{13,19}",
            r"|[0-9]{3,6}(?:-[0-9]{3,6}){2,5}",
            r"|[0-9]{3,6}(?: [0-9]{3,6}){2,5}"
        ));
        // IPv6 candidate: a run of hex digits, colons and dots containing a colon. Validated:
        // trailing dots trimmed, ≥ 2 colons, ≥ 1 decimal digit (so `A::B` in code is kept),
        // parses as `std::net::Ipv6Addr` (full, `::`-compressed and IPv4-suffixed forms).
        // Times (`12:30`, `12:30:45`) and MAC addresses fail validation.
        let ipv6 = re(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*");
        // IPv4: four dot-separated 1–3 digit octets, each validated ≤ 255.
        let ipv4 = re(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}");
        // Phone separators: optional spaces around a hyphen, a lone space, or a parenthesis.
        let sep = format!(r"(?:{SP}?{H}{SP}?|{SP}|[(（]|[)）]{SP}?)");
        let phones = vec![
            // International: `+` country code then 2–6 groups of 1–4 digits, separated by a
            // space, dot or hyphen (or nothing), a group optionally in parentheses
            // (`+81 (0)3 …`). Validated: 8–15 digits in all (E.164), balanced parentheses.
            (
                PhoneShape::International,
                re(&format!(
                    r"[+＋]{D}{{1,3}}(?:(?:{SP}?{H}{SP}?|{SP}|\.)?[(（]?{D}{{1,4}}[)）]?){{2,6}}"
                )),
            ),
            // NANP with parenthesised area code: `(415) 555-0100`. Validated: area code and
            // exchange start with 2–9.
            (
                PhoneShape::NanpParen,
                re(&format!(
                    r"[(（]{D}{{3}}[)）]{SP}?{D}{{3}}(?:{H}|[. ]){D}{{4}}"
                )),
            ),
            // NANP with hyphens: `415-555-0100`, `1-800-555-0100`. Validated like NanpParen.
            (
                PhoneShape::NanpDash,
                re(&format!(r"(?:1{H})?{D}{{3}}{H}{D}{{3}}{H}{D}{{4}}")),
            ),
            // Japanese domestic: leading 0, up to three digit groups with separators (hyphens,
            // spaces, parentheses `03(1234)5678` / `(03)1234-5678`, full-width forms).
            // Validated: 1 group (unseparated) or 3 groups, last group ≥ 3 digits, balanced
            // parentheses, and digit count by prefix: 050/070/080/090/0800 → 11;
            // 0120/0570/0990 → 10; other (landline) → 10, separators required, last group 4.
            (
                PhoneShape::Japan,
                re(&format!(
                    r"[(（]?[0０]{D}{{1,4}}{sep}?{D}{{1,4}}{sep}?{D}{{3,4}}"
                )),
            ),
        ];
        // Japanese postal code: optional `〒` (and space), then NNN-NNNN with ASCII or
        // full-width digits and any hyphen form. Longer digit runs are rejected by the
        // boundary rule; phone numbers are claimed earlier so their tails never match.
        let postal = re(&format!(r"(?:〒{SP}?)?{D}{{3}}{H}{D}{{4}}"));
        PiiScrubber {
            placeholder,
            email,
            card,
            ipv6,
            ipv4,
            phones,
            postal,
        }
    }

    /// Replaces every PII match with its placeholder; returns the new text and the counts.
    pub fn scrub(&self, text: &str) -> (String, PiiCounts) {
        let (out, counts) = self.scrub_cow(text);
        (out.into_owned(), counts)
    }

    /// Like [`PiiScrubber::scrub`], but borrows `text` when nothing was replaced.
    ///
    /// Passes repeat until one finds nothing (a candidate rejected only because of a
    /// neighbour that was itself PII can match once that neighbour is a placeholder), so the
    /// result is a fixed point: scrubbing it again changes nothing and counts nothing.
    pub fn scrub_cow<'a>(&self, text: &'a str) -> (Cow<'a, str>, PiiCounts) {
        let mut counts = PiiCounts::default();
        let mut cur: Cow<'a, str> = Cow::Borrowed(text);
        // Each productive pass strictly shrinks the non-placeholder text, so this ends; the
        // cap is only a guard.
        for _ in 0..16 {
            match self.one_pass(&cur, &mut counts) {
                Some(next) => cur = Cow::Owned(next),
                None => break,
            }
        }
        (cur, counts)
    }

    /// One detection pass; `None` when nothing was found.
    fn one_pass(&self, text: &str, counts: &mut PiiCounts) -> Option<String> {
        let spans = self.find_spans(text);
        if spans.iter().all(|s| s.kind.is_none()) {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for s in &spans {
            if let Some(kind) = s.kind {
                out.push_str(&text[last..s.start]);
                out.push_str(kind.placeholder());
                last = s.end;
                counts.record(kind, 1);
            }
        }
        out.push_str(&text[last..]);
        Some(out)
    }

    /// Every claimed span (placeholders and PII), sorted by start, non-overlapping.
    fn find_spans(&self, text: &str) -> Vec<Span> {
        let mut spans: Vec<Span> = self
            .placeholder
            .find_iter(text)
            .map(|m| Span {
                start: m.start(),
                end: m.end(),
                kind: None,
            })
            .collect();
        scan(&self.email, text, &mut spans, PiiKind::Email, |_, _, _| {
            Some(())
        });
        scan(
            &self.card,
            text,
            &mut spans,
            PiiKind::CreditCard,
            valid_card,
        );
        // IPv6 may shrink the candidate (trailing dots), so it is scanned by hand.
        self.scan_ipv6(text, &mut spans);
        scan(&self.ipv4, text, &mut spans, PiiKind::IpAddress, valid_ipv4);
        for (shape, re) in &self.phones {
            scan(re, text, &mut spans, PiiKind::Phone, |t, s, e| {
                valid_phone(*shape, t, s, e)
            });
        }
        scan(
            &self.postal,
            text,
            &mut spans,
            PiiKind::PostalCodeJp,
            |t, s, e| boundary_ok(t, s, e, false).then_some(()),
        );
        spans.sort_by_key(|s| s.start);
        spans
    }

    fn scan_ipv6(&self, text: &str, spans: &mut Vec<Span>) {
        let mut pos = 0;
        while let Some(m) = self.ipv6.find_at(text, pos) {
            let start = m.start();
            let end = start + m.as_str().trim_end_matches('.').len();
            let cand = &text[start..end];
            let ok = cand.matches(':').count() >= 2
                && cand.bytes().any(|b| b.is_ascii_digit())
                && cand.parse::<Ipv6Addr>().is_ok()
                && boundary_ok(text, start, end, false)
                && free(spans, start, end);
            if ok {
                spans.push(Span {
                    start,
                    end,
                    kind: Some(PiiKind::IpAddress),
                });
                pos = end;
            } else {
                pos = next_char(text, start);
            }
            if pos >= text.len() {
                break;
            }
        }
    }
}

/// Scans `text` with `re`; a match accepted by `validate` and not overlapping/touching a
/// claimed span is claimed as `kind`. After a rejected match the search restarts one
/// character after its start, so a valid candidate inside a rejected one is not skipped.
fn scan<F>(re: &Regex, text: &str, spans: &mut Vec<Span>, kind: PiiKind, validate: F)
where
    F: Fn(&str, usize, usize) -> Option<()>,
{
    let mut pos = 0;
    while pos < text.len() {
        let Some(m) = re.find_at(text, pos) else {
            break;
        };
        let (start, end) = (m.start(), m.end());
        if free(spans, start, end) && validate(text, start, end).is_some() {
            spans.push(Span {
                start,
                end,
                kind: Some(kind),
            });
            pos = end;
        } else {
            pos = next_char(text, start);
        }
    }
}

/// True when `[start, end)` neither overlaps nor touches any claimed span.
fn free(spans: &[Span], start: usize, end: usize) -> bool {
    spans.iter().all(|s| end < s.start || start > s.end)
}

fn next_char(text: &str, i: usize) -> usize {
    i + text[i..].chars().next().map_or(1, char::len_utf8)
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || ('０'..='９').contains(&c)
}

/// ASCII alphanumerics, `_`, full-width digits and Latin letters. Kana/kanji are *not* word
/// characters, so PII embedded in Japanese prose is found.
fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || c == '_'
        || is_digit(c)
        || ('Ａ'..='Ｚ').contains(&c)
        || ('ａ'..='ｚ').contains(&c)
}

fn is_hyphen(c: char) -> bool {
    matches!(
        c,
        '-' | '‐' | '‑' | '‒' | '–' | '—' | '―' | '−' | '－' | 'ー'
    )
}

/// Characters that continue a number when a digit follows/precedes them.
fn is_joiner(c: char, space_joins: bool) -> bool {
    is_hyphen(c)
        || matches!(c, '.' | ':' | '/' | ',' | '．' | '：' | '／' | '，')
        || (space_joins && c == ' ')
}

/// The shared boundary rule (see the module docs).
fn boundary_ok(text: &str, start: usize, end: usize, space_joins: bool) -> bool {
    let mut before = text[..start].chars().rev();
    match before.next() {
        Some(c) if is_word(c) => return false,
        Some(c) if is_joiner(c, space_joins) && before.next().is_some_and(is_digit) => {
            return false
        }
        _ => {}
    }
    let mut after = text[end..].chars();
    match after.next() {
        Some(c) if is_word(c) => false,
        Some(c) if is_joiner(c, space_joins) && after.next().is_some_and(is_digit) => false,
        _ => true,
    }
}

/// The digits of `s` as ASCII (full-width digits folded).
fn digits(s: &str) -> Vec<u8> {
    s.chars()
        .filter_map(|c| {
            if c.is_ascii_digit() {
                Some(c as u8 - b'0')
            } else if ('０'..='９').contains(&c) {
                Some((c as u32 - '０' as u32) as u8)
            } else {
                None
            }
        })
        .collect()
}

/// Lengths of the maximal digit runs of `s`.
fn groups(s: &str) -> Vec<usize> {
    s.split(|c: char| !is_digit(c))
        .filter(|g| !g.is_empty())
        .map(|g| g.chars().count())
        .collect()
}

/// Luhn checksum over decimal digits.
fn luhn(ds: &[u8]) -> bool {
    let sum: u32 = ds
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn valid_card(text: &str, start: usize, end: usize) -> Option<()> {
    let ds = digits(&text[start..end]);
    ((13..=19).contains(&ds.len()) && luhn(&ds) && boundary_ok(text, start, end, true))
        .then_some(())
}

fn valid_ipv4(text: &str, start: usize, end: usize) -> Option<()> {
    let ok = text[start..end]
        .split('.')
        .all(|o| o.parse::<u16>().is_ok_and(|v| v <= 255));
    (ok && boundary_ok(text, start, end, false)).then_some(())
}

fn parens_balanced(s: &str) -> bool {
    let open = s.chars().filter(|&c| c == '(' || c == '（').count();
    let close = s.chars().filter(|&c| c == ')' || c == '）').count();
    open == close
}

fn valid_phone(shape: PhoneShape, text: &str, start: usize, end: usize) -> Option<()> {
    let s = &text[start..end];
    if !parens_balanced(s) || !boundary_ok(text, start, end, false) {
        return None;
    }
    let ds = digits(s);
    let ok = match shape {
        PhoneShape::International => (8..=15).contains(&ds.len()),
        PhoneShape::NanpParen | PhoneShape::NanpDash => {
            // Strip an optional leading country code 1 (only NanpDash can have one).
            let n = if ds.len() == 11 { &ds[1..] } else { &ds[..] };
            n.len() == 10 && n[0] >= 2 && n[3] >= 2
        }
        PhoneShape::Japan => {
            let g = groups(s);
            let prefix: String = ds.iter().take(4).map(|d| char::from(b'0' + d)).collect();
            let mobile_like = ["050", "070", "080", "090"]
                .iter()
                .any(|p| prefix.starts_with(p))
                || prefix == "0800";
            let free_dial = ["0120", "0570", "0990"].contains(&prefix.as_str());
            let shape_ok = match g.len() {
                1 => mobile_like || free_dial,
                3 => {
                    g[2] >= 3 && (2..=5).contains(&g[0]) && (mobile_like || free_dial || g[2] == 4)
                }
                _ => false,
            };
            let len_ok = if mobile_like {
                ds.len() == 11
            } else {
                ds.len() == 10
            };
            shape_ok && len_ok
        }
    };
    ok.then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_known_values() {
        assert!(luhn(&digits("4111111111111111")));
        assert!(luhn(&digits("378282246310005")));
        assert!(!luhn(&digits("4111111111111112")));
    }

    #[test]
    fn boundary_rule() {
        assert!(boundary_ok("は090-1234-5678で", 3, 16, false));
        assert!(!boundary_ok("2024-11-23", 5, 10, false));
        assert!(!boundary_ok("x123", 1, 4, false));
    }

    #[test]
    fn scrubber_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<PiiScrubber>();
    }
}
