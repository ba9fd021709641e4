//! PII scrubber: positive/negative cases per kind, mixed text, idempotence.

use so8t_data::pii::{PiiCounts, PiiKind, PiiScrubber};

fn scrubber() -> PiiScrubber {
    PiiScrubber::new()
}

/// Asserts the exact output, that every replacement is of `kind`, and that there are `n`.
fn check(input: &str, expected: &str, kind: PiiKind, n: u64) {
    let s = scrubber();
    let (out, counts) = s.scrub(input);
    assert_eq!(out, expected, "input: {input:?}");
    assert_eq!(counts.get(kind), n, "count of {kind:?} for {input:?}");
    assert_eq!(counts.total(), n, "total for {input:?}: {counts:?}");
    // Idempotence: a second pass changes nothing and counts nothing.
    let (again, c2) = s.scrub(&out);
    assert_eq!(again, out, "not idempotent for {input:?}");
    assert_eq!(c2.total(), 0, "second pass counted for {input:?}");
}

/// Asserts the input is kept unchanged with zero counts.
fn kept(input: &str) {
    let (out, counts) = scrubber().scrub(input);
    assert_eq!(out, input, "should be kept: {input:?}");
    assert_eq!(counts.total(), 0, "counts for kept {input:?}: {counts:?}");
}

#[test]
fn placeholders() {
    assert_eq!(PiiKind::Email.placeholder(), "[EMAIL]");
    assert_eq!(PiiKind::Phone.placeholder(), "[PHONE]");
    assert_eq!(PiiKind::CreditCard.placeholder(), "[CREDIT_CARD]");
    assert_eq!(PiiKind::IpAddress.placeholder(), "[IP_ADDRESS]");
    assert_eq!(PiiKind::PostalCodeJp.placeholder(), "[POSTAL_CODE]");
}

#[test]
fn email_positive() {
    use PiiKind::Email;
    check(
        "メール: taro.yamada@example.co.jp",
        "メール: [EMAIL]",
        Email,
        1,
    );
    check(
        "Contact john.doe+news@mail.example.com for details.",
        "Contact [EMAIL] for details.",
        Email,
        1,
    );
    check(
        "連絡はinfo@example.comまでお願いします",
        "連絡は[EMAIL]までお願いします",
        Email,
        1,
    );
    check(
        "a_b-c@sub-domain.example.org, x@y.io",
        "[EMAIL], [EMAIL]",
        Email,
        2,
    );
}

#[test]
fn email_negative() {
    kept("user@localhost is not routable");
    kept("@mention and foo@ and @bar.com");
    kept("a.b.c without at sign");
}

#[test]
fn phone_japanese() {
    use PiiKind::Phone;
    check("連絡先は090-1234-5678です", "連絡先は[PHONE]です", Phone, 1);
    check("TEL: 03-1234-5678", "TEL: [PHONE]", Phone, 1);
    check("電話 045-123-4567 まで", "電話 [PHONE] まで", Phone, 1);
    check(
        "お問い合わせ 0120-123-456",
        "お問い合わせ [PHONE]",
        Phone,
        1,
    );
    check("携帯 080 1234 5678", "携帯 [PHONE]", Phone, 1);
    check("携帯 07012345678", "携帯 [PHONE]", Phone, 1);
    check(
        "電話は０９０－１２３４－５６７８です",
        "電話は[PHONE]です",
        Phone,
        1,
    );
    check("代表 03(1234)5678", "代表 [PHONE]", Phone, 1);
    check("代表 (03)1234-5678", "代表 [PHONE]", Phone, 1);
    check("国際 +81 90 1234 5678", "国際 [PHONE]", Phone, 1);
    check("国際 +81-3-1234-5678。", "国際 [PHONE]。", Phone, 1);
}

#[test]
fn phone_international() {
    use PiiKind::Phone;
    check("Call +1 415 555 0100 now", "Call [PHONE] now", Phone, 1);
    check("Call (415) 555-0100.", "Call [PHONE].", Phone, 1);
    check(
        "Call 415-555-0100 or 1-800-555-0199",
        "Call [PHONE] or [PHONE]",
        Phone,
        2,
    );
    check("London +44 20 7946 0958", "London [PHONE]", Phone, 1);
}

#[test]
fn phone_negative() {
    kept("The release date is 2024-11-23.");
    kept("開催日 2024-11-23 12:30 から");
    kept("Meeting at 12:30 and 10:30:45");
    kept("version 1.2.3 released");
    kept("12345 items");
    kept("In 2024 and 1999 we sold 300");
    kept("Range 10-20-30");
    kept("unseparated landline 0312345678 kept");
    // Order number: 4+4 digits without a leading 0 is neither a phone nor a postal code.
    kept("注文番号 No. 1234-5678");
    kept("+1 2 3");
    // Too many digits for a Japanese phone.
    kept("090-1234-56789");
}

#[test]
fn credit_card_positive() {
    use PiiKind::CreditCard;
    check(
        "Card: 4111 1111 1111 1111, exp 12/25",
        "Card: [CREDIT_CARD], exp 12/25",
        CreditCard,
        1,
    );
    check(
        "カード番号5500-0000-0000-0004で支払い",
        "カード番号[CREDIT_CARD]で支払い",
        CreditCard,
        1,
    );
    check("amex 378282246310005", "amex [CREDIT_CARD]", CreditCard, 1);
    check(
        "amex 3782 822463 10005",
        "amex [CREDIT_CARD]",
        CreditCard,
        1,
    );
    check(
        "visa 4111111111111111.",
        "visa [CREDIT_CARD].",
        CreditCard,
        1,
    );
}

#[test]
fn credit_card_negative() {
    // 16 digits failing the Luhn check.
    kept("番号 4111 1111 1111 1112 は無効");
    kept("id 4111111111111112");
    kept("1234-5678-9012-3456");
    // Mixed separators are not a card.
    kept("4111 1111-1111 1112");
    // 20 digits: too long.
    kept("41111111111111111111");
}

#[test]
fn ip_positive() {
    use PiiKind::IpAddress;
    check(
        "server 192.168.0.1 is down",
        "server [IP_ADDRESS] is down",
        IpAddress,
        1,
    );
    check(
        "接続元IPは10.0.0.255です。",
        "接続元IPは[IP_ADDRESS]です。",
        IpAddress,
        1,
    );
    check("host 255.255.255.255.", "host [IP_ADDRESS].", IpAddress, 1);
    check(
        "v6 2001:0db8:85a3:0000:0000:8a2e:0370:7334 ok",
        "v6 [IP_ADDRESS] ok",
        IpAddress,
        1,
    );
    check(
        "v6 2001:db8::1 and ::1 and fe80::1ff:fe23:4567:890a.",
        "v6 [IP_ADDRESS] and [IP_ADDRESS] and [IP_ADDRESS].",
        IpAddress,
        3,
    );
    check(
        "mapped ::ffff:192.0.2.128",
        "mapped [IP_ADDRESS]",
        IpAddress,
        1,
    );
}

#[test]
fn ip_negative() {
    kept("999.1.1.1 is not an IP");
    kept("1.2.3.256");
    kept("version 1.2.3");
    kept("v1.2.3.4 build");
    kept("時刻 12:30 と 23:59:59");
    kept("use std::io and A::B");
    kept("MAC 00:1A:2B:3C:4D:5E");
    kept("1.2.3.4.5");
}

#[test]
fn postal_positive() {
    use PiiKind::PostalCodeJp;
    check(
        "〒100-0001 東京都千代田区",
        "[POSTAL_CODE] 東京都千代田区",
        PostalCodeJp,
        1,
    );
    check(
        "〒 530-0001 大阪市",
        "[POSTAL_CODE] 大阪市",
        PostalCodeJp,
        1,
    );
    check(
        "郵便番号は１００－０００１です",
        "郵便番号は[POSTAL_CODE]です",
        PostalCodeJp,
        1,
    );
    check(
        "住所: 060-0806 札幌市",
        "住所: [POSTAL_CODE] 札幌市",
        PostalCodeJp,
        1,
    );
}

#[test]
fn postal_negative() {
    kept("1234-5678");
    kept("12-3456");
    kept("123-45678");
    kept("0123-4567");
    kept("2024-11-23");
    // 9 digits is no phone, and its `123-4567` tail is no postal code (joined by a hyphen).
    kept("03-123-4567");
    // A phone's tail is never a postal code.
    let (out, counts) = scrubber().scrub("03-1234-5678 と 0120-123-4567");
    assert_eq!(out, "[PHONE] と 0120-123-4567");
    assert_eq!(counts.get(PiiKind::PostalCodeJp), 0);
}

#[test]
fn mixed_text() {
    let s = scrubber();
    let input = "山田太郎 〒100-0001 東京都千代田区1-1 TEL 03-1234-5678 / 090-1234-5678, \
                 mail taro@example.co.jp, card 4111-1111-1111-1111, from 203.0.113.7 on 2024-11-23 12:30 (v1.2.3)";
    let (out, counts) = s.scrub(input);
    assert_eq!(
        out,
        "山田太郎 [POSTAL_CODE] 東京都千代田区1-1 TEL [PHONE] / [PHONE], \
         mail [EMAIL], card [CREDIT_CARD], from [IP_ADDRESS] on 2024-11-23 12:30 (v1.2.3)"
    );
    assert_eq!(counts.get(PiiKind::PostalCodeJp), 1);
    assert_eq!(counts.get(PiiKind::Phone), 2);
    assert_eq!(counts.get(PiiKind::Email), 1);
    assert_eq!(counts.get(PiiKind::CreditCard), 1);
    assert_eq!(counts.get(PiiKind::IpAddress), 1);
    assert_eq!(counts.total(), 6);
    let (again, c2) = s.scrub(&out);
    assert_eq!(again, out);
    assert_eq!(c2, PiiCounts::default());
}

#[test]
fn email_wins_over_digits_inside() {
    let (out, counts) = scrubber().scrub("user09012345678@example.com");
    assert_eq!(out, "[EMAIL]");
    assert_eq!(counts.total(), 1);
    let (out, _) = scrubber().scrub("admin@192.168.0.1.example.com");
    assert_eq!(out, "[EMAIL]");
}

#[test]
fn no_pii_unchanged() {
    let s = scrubber();
    for t in [
        "",
        "こんにちは、世界。",
        "Plain English text with numbers 42 and 2024.",
        "[EMAIL] [PHONE] [CREDIT_CARD] [IP_ADDRESS] [POSTAL_CODE]",
    ] {
        let (out, counts) = s.scrub(t);
        assert_eq!(out, t);
        assert!(counts.is_empty());
        let (cow, _) = s.scrub_cow(t);
        assert!(matches!(cow, std::borrow::Cow::Borrowed(_)));
    }
}

#[test]
fn idempotence_over_many_inputs() {
    let s = scrubber();
    for t in [
        "a@b.jp090-1234-5678",
        "[EMAIL]123-4567",
        "090-1234-5678 123-4567 4111 1111 1111 1111 1.1.1.1",
        "〒１００－０００１ ０３－１２３４－５６７８",
        "+81 90 1234 5678 2024",
        "4111 1111 1111 1111 2024",
        "999.1.1.1.1 and 2001:db8::1:12:30",
    ] {
        let (once, _) = s.scrub(t);
        let (twice, c) = s.scrub(&once);
        assert_eq!(twice, once, "input {t:?}");
        assert_eq!(c.total(), 0, "input {t:?}");
    }
}

#[test]
fn counts_add_and_serialize() {
    let s = scrubber();
    let (_, mut a) = s.scrub("x@y.com 090-1234-5678");
    let (_, b) = s.scrub("〒100-0001 z@w.org");
    a.add(&b);
    assert_eq!(a.get(PiiKind::Email), 2);
    assert_eq!(a.get(PiiKind::Phone), 1);
    assert_eq!(a.get(PiiKind::PostalCodeJp), 1);
    assert_eq!(a.get(PiiKind::CreditCard), 0);
    assert_eq!(a.total(), 4);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        r#"{"email":2,"phone":1,"postal_code_jp":1}"#
    );
}

#[test]
fn scrubber_shared_across_threads() {
    let s = std::sync::Arc::new(scrubber());
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || s.scrub("mail a@b.co").0)
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), "mail [EMAIL]");
    }
}

#[test]
fn neighbour_pii_found_on_later_pass() {
    // The card is first rejected (a space + digit follows it); once the IP next to it is a
    // placeholder it matches, and the result is a fixed point.
    let (out, counts) = scrubber().scrub("4111 1111 1111 1111 1.1.1.1");
    assert_eq!(out, "[CREDIT_CARD] [IP_ADDRESS]");
    assert_eq!(counts.get(PiiKind::CreditCard), 1);
    assert_eq!(counts.get(PiiKind::IpAddress), 1);
}
