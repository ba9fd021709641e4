//! Unit tests of the notifiers' parts (WAV synthesis, sound parsing).
use super::*;

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}
fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

#[test]
fn chime_is_a_valid_pcm16_wav() {
    let b = chime_wav();
    assert_eq!(&b[0..4], b"RIFF");
    assert_eq!(u32_at(&b, 4) as usize, b.len() - 8);
    assert_eq!(&b[8..16], b"WAVEfmt ");
    assert_eq!(u32_at(&b, 16), 16);
    assert_eq!(u16_at(&b, 20), 1, "PCM");
    assert_eq!(u16_at(&b, 22), 1, "mono");
    let rate = u32_at(&b, 24);
    assert_eq!(rate, 22_050);
    assert_eq!(u32_at(&b, 28), rate * 2);
    assert_eq!(u16_at(&b, 32), 2);
    assert_eq!(u16_at(&b, 34), 16);
    assert_eq!(&b[36..40], b"data");
    let data = u32_at(&b, 40) as usize;
    assert_eq!(data, b.len() - 44);
    assert_eq!(data % 2, 0);
    // 0.45 s of sound, not silence.
    assert_eq!(
        data / 2,
        (22_050.0 * 0.15) as usize + (22_050.0 * 0.30) as usize
    );
    let peak = b[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]).unsigned_abs())
        .max()
        .unwrap_or(0);
    assert!(peak > 5000 && peak < 16_000, "peak {peak}");
}

#[test]
fn empty_wav_has_consistent_sizes() {
    let b = wav_pcm16(8000, &[]);
    assert_eq!(b.len(), 44);
    assert_eq!(u32_at(&b, 4), 36);
    assert_eq!(u32_at(&b, 40), 0);
}

#[test]
fn sound_parses_and_round_trips() {
    assert_eq!(Sound::parse("off"), Sound::Off);
    assert_eq!(Sound::parse("Bell"), Sound::Bell);
    assert_eq!(Sound::parse(" chime "), Sound::Chime);
    assert_eq!(
        Sound::parse("/usr/share/sounds/done.wav"),
        Sound::File("/usr/share/sounds/done.wav".into())
    );
    let c: NotifyConfig = serde_yaml_ng::from_str(
        "desktop: true\nsound: chime\nwebhook:\n  url: http://127.0.0.1:9/x\n  retries: 1\n",
    )
    .unwrap();
    assert!(c.desktop);
    assert_eq!(c.sound, Sound::Chime);
    let w = c.webhook.as_ref().unwrap();
    assert_eq!((w.retries, w.timeout_secs, w.backoff_secs), (1, 10.0, 1.0));
    let back: NotifyConfig =
        serde_yaml_ng::from_str(&serde_yaml_ng::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
    for (text, want) in [
        ("sound: off", Sound::Off),
        ("sound: false", Sound::Off),
        ("sound: bell", Sound::Bell),
        (
            "sound: sounds/done.wav",
            Sound::File("sounds/done.wav".into()),
        ),
        ("{}", Sound::Off),
    ] {
        let c: NotifyConfig = serde_yaml_ng::from_str(text).unwrap();
        assert_eq!(c.sound, want, "{text}");
    }
    let yaml = serde_yaml_ng::to_string(&NotifyConfig::default()).unwrap();
    assert!(yaml.contains("sound: off"), "{yaml}");
    assert!(serde_yaml_ng::from_str::<NotifyConfig>("desktp: true").is_err());
    assert!(serde_yaml_ng::from_str::<NotifyConfig>("webhook: {}").is_err());
}
