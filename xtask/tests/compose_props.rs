//! Property tests of the compose engine: no panic on any input, and on generated compose files
//! `apply` gives a durable, check-clean, idempotent result that keeps every other byte.

use proptest::prelude::*;
use xtask::compose::{check, edit, yaml};

/// Cases per property: the CI default, or `PROPTEST_CASES` for a longer local run.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fixture_texts() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compose");
    let mut out = Vec::new();
    for sub in ["apply", "bad"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let p = e.unwrap().path();
            let files: Vec<std::path::PathBuf> = if p.is_dir() {
                vec![p.join("before.yml"), p.join("after.yml")]
            } else {
                vec![p]
            };
            for f in files {
                if let Ok(t) = std::fs::read_to_string(&f) {
                    out.push(t);
                }
            }
        }
    }
    out
}

/// Everything the engine does with a text, none of which may panic.
fn exercise(text: &str) {
    let _ = yaml::parse(text);
    let _ = check::check_text(text, None);
    if let Ok(a) = edit::apply(text, None, &[]) {
        // Whatever apply produced must itself be stable.
        let again = edit::apply(&a.text, None, &[]).expect("apply accepts its own output");
        assert_eq!(again.text, a.text, "apply is not idempotent on:\n{text}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(400), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in "[ -~\t\r\n\u{e9}]{0,200}") {
        exercise(&s);
    }

    #[test]
    fn yaml_ish_text_never_panics(parts in proptest::collection::vec(prop_oneof![
        Just("services:\n"), Just("  redis:\n"), Just("    command: "), Just("redis-server"),
        Just(" --appendonly no"), Just(" --appendfsync always"), Just("[a, "), Just("]"), Just("{"),
        Just("}"), Just("\"x"), Just("'"), Just("&a "), Just("*a"), Just("<<: *a\n"), Just("- "),
        Just("\n"), Just("\r\n"), Just("\t"), Just("    volumes: [redis_data:/data]\n"),
        Just("volumes:\n  redis_data:\n"), Just("sh -c \"exec redis-server\""), Just("|\n"), Just(">-\n"),
        Just("#c\n"), Just(": "), Just("---\n"), Just("    image: redis\n"), Just("\u{e9}"),
        Just("    command: |\n      redis-server\n"), Just("  \u{e9}\n"), Just("\\\u{e9}"),
        Just("    command: >\n     x\n"),
    ], 0..40)) {
        exercise(&parts.concat());
    }

    #[test]
    fn mutated_fixtures_never_panic(idx in 0usize..1000, ops in proptest::collection::vec((0usize..10_000, 0u8..3, any::<u8>()), 1..6)) {
        let texts = fixture_texts();
        let mut bytes = texts[idx % texts.len()].clone().into_bytes();
        for (at, op, b) in ops {
            if bytes.is_empty() { break; }
            let at = at % bytes.len();
            match op {
                0 => { bytes.remove(at); }
                1 => bytes.insert(at, b" :-[]{}'\"\n\t#&*|>!%@`,?"[b as usize % 22]),
                _ => bytes[at] = b,
            }
        }
        if let Ok(text) = std::str::from_utf8(&bytes) {
            exercise(text);
        } else {
            prop_assert!(yaml::decode(&bytes).is_err());
        }
    }
}

#[derive(Debug, Clone)]
struct Gen {
    form: u8,
    appendonly: Option<&'static str>,
    fsync: Option<&'static str>,
    save: bool,
    quote: u8,
    long_volume: bool,
    volume: &'static str,
    crlf: bool,
    final_newline: bool,
    comments: bool,
    other_first: bool,
}

fn gen() -> impl Strategy<Value = Gen> {
    (
        0u8..6,
        prop_oneof![Just(None), Just(Some("yes")), Just(Some("no"))],
        prop_oneof![
            Just(None),
            Just(Some("everysec")),
            Just(Some("always")),
            Just(Some("no"))
        ],
        any::<bool>(),
        0u8..3,
        any::<bool>(),
        prop_oneof![
            Just("redis_data"),
            Just("cache"),
            Just("redis_aof"),
            Just("kv-data")
        ],
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                form,
                appendonly,
                fsync,
                save,
                quote,
                long_volume,
                volume,
                (crlf, final_newline, comments, other_first),
            )| Gen {
                form,
                appendonly,
                fsync,
                save,
                quote,
                long_volume,
                volume,
                crlf,
                final_newline,
                comments,
                other_first,
            },
        )
}

fn q(g: &Gen, w: &str) -> String {
    match g.quote {
        1 => format!("'{w}'"),
        2 => format!("\"{w}\""),
        _ => w.to_string(),
    }
}

const OTHER: &str = "  web:\n    image: nginx:1.27 # front\n    environment:\n      NOTE: \"redis_data is only text --appendonly no\"\n    volumes:\n      - ./redis_data:/srv:ro\n";

fn render(g: &Gen) -> String {
    let mut args: Vec<String> = Vec::new();
    if g.save {
        args.extend(["--save".into(), "60".into(), "1".into()]);
    }
    if let Some(v) = g.appendonly {
        args.extend(["--appendonly".into(), v.into()]);
    }
    if let Some(v) = g.fsync {
        args.extend(["--appendfsync".into(), v.into()]);
    }
    let words: Vec<String> = std::iter::once("redis-server".to_string())
        .chain(args)
        .collect();
    let command = match g.form {
        0 => String::new(),
        1 => format!("    command: {}\n", words.join(" ")),
        2 => format!(
            "    command: [{}]\n",
            words.iter().map(|w| q(g, w)).collect::<Vec<_>>().join(", ")
        ),
        3 => format!(
            "    command:\n{}",
            words
                .iter()
                .map(|w| format!("      - {}\n", q(g, w)))
                .collect::<String>()
        ),
        4 => format!(
            "    command: [\"sh\", \"-c\", \"exec {} && true\"]\n",
            words.join(" ")
        ),
        _ => format!(
            "    command:\n      - sh\n      - -c\n      - umask 077 && exec {}\n",
            words.join(" ")
        ),
    };
    let volume = if g.long_volume {
        format!(
            "      - type: volume\n        source: {}\n        target: /data\n",
            g.volume
        )
    } else {
        format!("      - {}:/data\n", g.volume)
    };
    let comment = if g.comments { "# the cache\n" } else { "" };
    let redis =
        format!("  redis:\n    image: redis:7.2-alpine\n{command}{comment}    volumes:\n{volume}");
    let services = if g.other_first {
        format!("{OTHER}{redis}")
    } else {
        format!("{redis}{OTHER}")
    };
    let mut text = format!("{comment}services:\n{services}volumes:\n  {}:\n", g.volume);
    if !g.final_newline {
        text.pop();
    }
    if g.crlf {
        text = text.replace('\n', "\r\n");
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(300), ..ProptestConfig::default() })]

    #[test]
    fn generated_files_become_durable_and_keep_other_bytes(g in gen()) {
        let text = render(&g);
        let a = edit::apply(&text, None, &[]).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        // Durable and check-clean.
        let (findings, _) = check::check_text(&a.text, None).unwrap();
        prop_assert!(findings.is_empty(), "{findings:?}\n{}", a.text);
        // Idempotent.
        let b = edit::apply(&a.text, None, &[]).unwrap();
        prop_assert_eq!(&b.text, &a.text);
        prop_assert!(b.changes.is_empty());
        // Other bytes kept: the other service, line endings, final newline.
        let other = if g.crlf { OTHER.replace('\n', "\r\n") } else { OTHER.to_string() };
        prop_assert!(a.text.contains(&other));
        if g.crlf {
            prop_assert!(!a.text.replace("\r\n", "").contains('\n'), "bare LF in {:?}", a.text);
        }
        prop_assert_eq!(a.text.ends_with('\n'), text.ends_with('\n'));
        if text == a.text {
            prop_assert!(g.appendonly == Some("yes") && g.fsync == Some("everysec") && g.volume == "redis_aof" && g.form != 0);
        }
    }
}
